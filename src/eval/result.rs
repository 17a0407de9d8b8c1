//! The evaluation result: what `strnas eval --json` writes and `strnas bench --eval` / `strnas report --eval`
//! read back. libtorch-free, so builds without the `torch` feature read results made by builds with it.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Timing summary (milliseconds) of repeated runs.
pub use crate::measure::Stats as TimeStats;

/// Scores on one dataset, or pooled over all of them (`total`).
///
/// Reading accepts hand-written results: only `name` and `accuracy` are required, the other fields default
/// to empty / zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetResult {
    /// The dataset's name (its folder name), or `total`.
    pub name: String,
    /// The dataset's folder (empty for `total`).
    #[serde(default)]
    pub path: String,
    /// Samples scored.
    #[serde(default)]
    pub samples: u64,
    /// Samples left out by label filtering (length, charset).
    #[serde(default)]
    pub filtered: usize,
    /// Samples left out because their image could not be read or decoded.
    #[serde(default)]
    pub unreadable: usize,
    /// Word accuracy in percent.
    pub accuracy: f64,
    /// Mean norm_ED in [0, 1].
    #[serde(default)]
    pub norm_ed: f64,
}

/// Time per image of the tch network, measured two ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// The libtorch device, as `Debug` prints it (`Cpu`, `Cuda(0)`).
    pub device: String,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// Synchronised batch-1 forward latency after warm-up (what a deployed single-image service sees).
    pub batch1: TimeStats,
    /// Synchronised forward time of a full batch divided by its size (throughput; DTRB's ms/image is this
    /// figure without synchronisation).
    pub batched_ms_per_image: f64,
    pub batch_size: usize,
}

/// One model's evaluation: per-dataset and pooled scores, size, and (unless skipped) timing.
///
/// Written by `strnas eval --json` with every field present (`timing` is `null` when skipped). Reading
/// requires `model`, `datasets` and `total`; `spec` and `weights` default to empty, `params`, `flops` and
/// `timing` to absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// The spec's model name.
    pub model: String,
    /// The spec file evaluated.
    #[serde(default)]
    pub spec: String,
    /// The weights file evaluated.
    #[serde(default)]
    pub weights: String,
    /// Parameters of the spec's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    /// FLOPs of one forward pass of the spec's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<u64>,
    /// One entry per dataset, in the order given.
    pub datasets: Vec<DatasetResult>,
    /// Every sample pooled (`name` is `total`).
    pub total: DatasetResult,
    #[serde(default)]
    pub timing: Option<Timing>,
}

impl EvalResult {
    /// Reads a `strnas eval --json` result; errors name `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}: not a `strnas eval --json` result", path.display()))
    }

    /// Parses the JSON text of a result.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// The JSON text `strnas eval --json` writes (pretty-printed).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(name: &str, path: &str) -> DatasetResult {
        DatasetResult { name: name.into(), path: path.into(), samples: 10, filtered: 1, unreadable: 0, accuracy: 81.5, norm_ed: 0.9 }
    }

    #[test]
    fn written_json_keeps_its_fields_and_reads_back() {
        let r = EvalResult {
            model: "m".into(),
            spec: "s.yaml".into(),
            weights: "s.safetensors".into(),
            params: Some(5),
            flops: Some(7),
            datasets: vec![dataset("IIIT5k", "data/IIIT5k")],
            total: dataset("total", ""),
            timing: None,
        };
        let json = r.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["datasets", "flops", "model", "params", "spec", "timing", "total", "weights"]);
        assert!(v["timing"].is_null());
        let d: Vec<&str> = v["total"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(d, ["accuracy", "filtered", "name", "norm_ed", "path", "samples", "unreadable"]);
        assert!(json.find("\"model\"").unwrap() < json.find("\"spec\"").unwrap());
        assert!(json.find("\"flops\"").unwrap() < json.find("\"datasets\"").unwrap());
        assert_eq!(EvalResult::parse(&json).unwrap(), r);
    }

    #[test]
    fn reading_needs_only_names_and_accuracies() {
        let r = EvalResult::parse(r#"{"model": "m", "datasets": [{"name": "a", "accuracy": 50}], "total": {"name": "total", "accuracy": 50}}"#).unwrap();
        assert_eq!((r.params, r.timing), (None, None));
        assert_eq!(r.datasets[0].accuracy, 50.0);
        assert!(EvalResult::parse(r#"{"model": "m"}"#).is_err());
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.json");
        let e = format!("{:#}", EvalResult::read(&p).unwrap_err());
        assert!(e.contains("e.json: cannot read"), "{e}");
        std::fs::write(&p, "{}").unwrap();
        let e = format!("{:#}", EvalResult::read(&p).unwrap_err());
        assert!(e.contains("e.json: not a `strnas eval --json` result"), "{e}");
    }
}
