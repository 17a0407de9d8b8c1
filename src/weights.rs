//! Weight files: safetensors holding f32 tensors named exactly as the spec inventory names them
//! ([`crate::ops::tensors`], e.g. `extractor.cells.3.dw.conv.weight`), readable without libtorch so
//! the deployment path (export, bench) needs no 5 GB download.
//!
//! Two flavours share the format, told apart by the `format` metadata key:
//! - `strnas-weights`: model tensors only (parameters and BN running statistics); what `export` reads.
//! - `strnas-checkpoint`: the same plus optimizer state under `optimizer/<slot>/<tensor>` and training state
//!   (iteration, seed, spec) in the metadata; what `train --resume` reads.
//!
//! May depend on `spec`, `ops` (the tensor inventory), `rng` and `io`; libtorch-free (`nn::weights` moves
//! these files in and out of a tch VarStore).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

use crate::spec::arch::Arch;
use crate::ops::{self, TensorInfo};

/// Prefix of optimizer-state tensors in a checkpoint; cannot collide with model names (they never hold `/`).
pub const OPTIMIZER_PREFIX: &str = "optimizer/";
/// Tensors that exist only while training (auxiliary heads), kept in checkpoints, never in model weights.
pub const TRAINING_PREFIX: &str = "training.";

#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        NamedTensor { shape, data }
    }
}

/// An in-memory safetensors file of f32 tensors plus string metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightFile {
    pub tensors: BTreeMap<String, NamedTensor>,
    pub metadata: BTreeMap<String, String>,
}

impl WeightFile {
    /// Reads `path`; errors name the file and, for unsupported tensors, the tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading weights {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("weights {}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).context("not a safetensors file")?;
        let (_, meta) = SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
        let mut out = WeightFile::default();
        if let Some(m) = meta.metadata() {
            out.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!("tensor {name}: dtype {:?} is not supported (strnas stores f32)", view.dtype());
            }
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            out.tensors.insert(name, NamedTensor::new(view.shape().to_vec(), data));
        }
        Ok(out)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = bufs
            .iter()
            .map(|(n, s, b)| Ok((n.as_str(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone().into_iter().collect());
        Ok(safetensors::serialize(views, meta)?)
    }

    /// Writes atomically (temp file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes()?)
    }

    /// Model tensors (everything but optimizer state).
    pub fn model_tensors(&self) -> impl Iterator<Item = (&String, &NamedTensor)> {
        self.tensors.iter().filter(|(n, _)| !n.starts_with(OPTIMIZER_PREFIX) && !n.starts_with(TRAINING_PREFIX))
    }

    /// Checks the file against the spec: the spec it was made from (the `spec_hash` metadata every strnas
    /// weight file carries; files without it, from other tools, are matched by tensors alone), then the model
    /// tensors against the spec's inventory: same names, same shapes. A hash mismatch catches what names and
    /// shapes cannot see (strides, input width, `batch_max_length`, charset order, ...); when the file also
    /// records its spec (`spec` metadata) the differing fields are listed.
    pub fn check_against(&self, arch: &Arch) -> Result<(), WeightMismatch> {
        let expected = ops::tensors(arch);
        let mut m = WeightMismatch::default();
        if let Some(found) = self.metadata.get(SPEC_HASH) {
            let want = crate::spec::arch_hash(&arch.spec);
            if *found != want {
                let fields = self.metadata.get(SPEC).map(|saved| spec_differences(saved, &arch.spec)).unwrap_or_default();
                m.spec = Some(SpecMismatch { spec_hash: want, file_hash: found.clone(), fields });
            }
        }
        for t in &expected {
            match self.tensors.get(&t.name) {
                None => m.missing.push(t.name.clone()),
                Some(got) if got.shape != t.shape => m.wrong_shape.push((t.name.clone(), t.shape.clone(), got.shape.clone())),
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = expected.iter().map(|t| t.name.as_str()).collect();
        m.unexpected = self.model_tensors().map(|(n, _)| n).filter(|n| !known.contains(n.as_str())).cloned().collect();
        if m.is_empty() {
            Ok(())
        } else {
            Err(m)
        }
    }
}

/// The weights that belong to a spec by convention: `dir/stem.yaml` -> `dir/stem.safetensors` (what
/// `strnas train` writes as `RUN/model.yaml` + `RUN/model.safetensors`).
pub fn sibling_of(spec: &Path) -> std::path::PathBuf {
    spec.with_extension("safetensors")
}

/// Metadata key of the hash of the spec a weight file was made from ([`crate::spec::arch_hash`]).
pub const SPEC_HASH: &str = "spec_hash";
/// Metadata key of the spec itself (JSON), so a mismatch can name the fields that differ.
pub const SPEC: &str = "spec";

/// The metadata every strnas weight file of `arch` carries: its format, the strnas version, the model name,
/// the spec hash and the spec.
pub fn model_metadata(arch: &Arch, format: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), format.into());
    m.insert("strnas_version".into(), env!("CARGO_PKG_VERSION").into());
    m.insert("model".into(), arch.name.clone());
    m.insert(SPEC_HASH.into(), crate::spec::arch_hash(&arch.spec));
    if let Ok(json) = serde_json::to_string(&arch.spec) {
        m.insert(SPEC.into(), json);
    }
    m
}

/// The spec fields (dotted paths, `name`/`description`/`reference` ignored as the hash ignores them) whose
/// values differ between a saved spec (JSON) and `spec`.
fn spec_differences(saved: &str, spec: &crate::spec::SpecFile) -> Vec<String> {
    fn flatten(v: &serde_json::Value, path: String, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| flatten(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out)),
            serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| flatten(v, format!("{path}.{i}"), out)),
            other => {
                out.insert(path, other.to_string());
            }
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::from_str::<serde_json::Value>(saved), serde_json::to_value(spec)) else { return vec![] };
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(&a, String::new(), &mut fa);
    flatten(&b, String::new(), &mut fb);
    let ignored = |k: &str| ["name", "description", "reference"].iter().any(|p| k == *p || k.starts_with(&format!("{p}.")));
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).filter(|k| !ignored(k)).collect();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| format!("{k}: file {}, spec {}", fa.get(k).map_or("(absent)", |v| v), fb.get(k).map_or("(absent)", |v| v)))
        .collect()
}

/// The weights were made from another spec than the one given.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecMismatch {
    pub spec_hash: String,
    pub file_hash: String,
    /// The differing fields, when the file records its spec.
    pub fields: Vec<String>,
}

/// How a weight file differs from a spec: the spec it was made from, and tensor by tensor.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WeightMismatch {
    pub spec: Option<SpecMismatch>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected shape, found shape)
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl WeightMismatch {
    pub fn is_empty(&self) -> bool {
        self.spec.is_none() && self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for WeightMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 12;
        let list = |f: &mut fmt::Formatter<'_>, what: &str, names: Vec<String>| -> fmt::Result {
            if names.is_empty() {
                return Ok(());
            }
            // Per part (the name's first component), so a wrong-spec file is recognisable at a glance.
            let mut parts: BTreeMap<&str, usize> = BTreeMap::new();
            for n in &names {
                *parts.entry(n.split('.').next().unwrap_or("")).or_default() += 1;
            }
            let by_part: Vec<String> = parts.iter().map(|(p, c)| format!("{p}: {c}")).collect();
            write!(f, "\n  {} {what} ({}):", names.len(), by_part.join(", "))?;
            for n in names.iter().take(SHOW) {
                write!(f, "\n    {n}")?;
            }
            if names.len() > SHOW {
                write!(f, "\n    ... and {} more", names.len() - SHOW)?;
            }
            Ok(())
        };
        write!(f, "weights do not match the spec")?;
        if let Some(s) = &self.spec {
            write!(f, "\n  made from another spec: spec_hash {} in the file, {} for this spec", &s.file_hash, &s.spec_hash)?;
            for d in s.fields.iter().take(SHOW) {
                write!(f, "\n    {d}")?;
            }
            if s.fields.len() > SHOW {
                write!(f, "\n    ... and {} more", s.fields.len() - SHOW)?;
            }
        }
        list(f, "missing", self.missing.clone())?;
        list(f, "not in the spec", self.unexpected.clone())?;
        list(
            f,
            "with the wrong shape",
            self.wrong_shape.iter().map(|(n, e, g)| format!("{n}: spec {e:?}, file {g:?}")).collect(),
        )
    }
}

impl std::error::Error for WeightMismatch {}

/// Random weights for `arch` without libtorch (`export --init random`, tests): see [`random_tensors`].
pub fn random_init(arch: &Arch, seed: u64) -> WeightFile {
    let mut wf = random_tensors(&ops::tensors(arch), seed);
    let mut meta = model_metadata(arch, "strnas-random-init");
    meta.append(&mut wf.metadata);
    wf.metadata = meta;
    wf
}

/// Random values for `tensors` (a network's or a single block's inventory): Kaiming-normal weights, small
/// random biases and BatchNorm statistics (so BN folding is exercised), and the TPS last FC as the reference
/// initialises it (zero weights, RARE's fiducials as bias). Deterministic for a seed and the tensors' order.
pub fn random_tensors(tensors: &[TensorInfo], seed: u64) -> WeightFile {
    use crate::rng::Rng;
    let mut wf = WeightFile::default();
    wf.metadata.insert("format".into(), "strnas-random-init".into());
    wf.metadata.insert("seed".into(), seed.to_string());
    for (k, t) in tensors.iter().enumerate() {
        let mut rng = Rng::for_item(seed, 0xB17, k as u64);
        let n = t.numel() as usize;
        let fan_in = if t.shape.len() > 1 { t.shape[1..].iter().product::<usize>().max(1) } else { 1 };
        let std = (2.0 / fan_in as f64).sqrt();
        let name = t.name.as_str();
        let data: Vec<f32> = if name == "rectifier.fc2.weight" {
            vec![0.0; n]
        } else if name == "rectifier.fc2.bias" {
            crate::spec::tps::initial_fiducials(n / 2).into_iter().map(|v| v as f32).collect()
        } else if name.ends_with(".bn.running_var") || name.ends_with(".bn.weight") {
            (0..n).map(|_| rng.range(0.5, 1.5) as f32).collect()
        } else if name.ends_with(".bn.running_mean") || name.ends_with(".bn.bias") || name.contains("bias") {
            (0..n).map(|_| (rng.normal() * 0.1) as f32).collect()
        } else if name.contains(".lstm.") || name.contains(".rnn.") {
            // Recurrent weights: a smaller scale keeps 26 decoding steps well-conditioned.
            (0..n).map(|_| (rng.normal() * 0.1) as f32).collect()
        } else {
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        };
        wf.tensors.insert(t.name.clone(), NamedTensor::new(t.shape.clone(), data));
    }
    wf
}

impl ops::TensorSource for WeightFile {
    fn tensor(&self, name: &str) -> Option<ops::TensorRef<'_>> {
        self.tensors.get(name).map(|t| ops::TensorRef { shape: &t.shape, data: &t.data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_and_metadata() {
        let mut w = WeightFile::default();
        w.tensors.insert("a.weight".into(), NamedTensor::new(vec![2, 3], vec![1.0, -2.5, 3.0, 0.0, 1e-7, 6.0]));
        w.tensors.insert("b".into(), NamedTensor::new(vec![], vec![4.0]));
        w.metadata.insert("format".into(), "strnas-weights".into());
        let back = WeightFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(WeightFile::from_bytes(b"not a safetensors file at all").is_err());
    }
}
