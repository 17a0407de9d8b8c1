//! The strnas metadata of an exported model (ONNX `metadata_props`), written by `export` and read back by
//! `infer`, `verify` and `bench`: one type, [`ModelMetadata`], for both directions.
//!
//! Depends on `spec` (what the values are computed from), `weights` (their format tag) and the label
//! decoding of `data::labels`; nothing that runs models.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use strnas_onnx::ModelProto;

use crate::data::labels::Decoding;
use crate::spec::arch::{Arch, Prediction};
use crate::spec::Charset;
use crate::weights::WeightFile;

/// The normalisation every strnas model expects (recorded for readers; `infer` applies it).
pub const NORMALIZATION: &str = "(x / 255 - 0.5) / 0.5";

/// What strnas records about an exported model: provenance, size, and the preprocessing and decoding
/// contract a reader needs to recognise images with it.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    /// The strnas version that exported the model.
    pub strnas_version: String,
    /// The spec's model name.
    pub model: String,
    /// Hash of the resolved spec ([`crate::spec::arch_hash`]).
    pub spec_hash: String,
    /// Trainable parameters of the spec (BatchNorm included, before folding).
    pub params: u64,
    /// FLOPs at batch 1 (2 x multiply-accumulates), from the spec count.
    pub flops: u64,
    /// The character set, in class order, with its case sensitivity.
    pub charset: Charset,
    pub decoding: Decoding,
    /// Longest label the decoder emits.
    pub batch_max_length: u32,
    pub input_height: u32,
    pub input_width: u32,
    pub input_channels: u32,
    /// Resize keeping the aspect ratio, then pad (else stretch).
    pub keep_ratio_pad: bool,
    /// [`NORMALIZATION`] for models strnas exports.
    pub normalization: String,
    /// The weight file's `format` tag (`unknown` when it has none).
    pub weights: String,
    /// Set on quantized exports only (keys `quantization`, `quantization_calibration`).
    pub quantization: Option<Quantization>,
}

/// How a quantized export was quantized, as its metadata records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    /// The scheme, e.g. `int8-qdq: weights int8 symmetric per output channel, activations uint8 per tensor`.
    pub scheme: String,
    /// The calibration: method, images and data, e.g. `minmax over 256 images of valid`.
    pub calibration: String,
}

impl ModelMetadata {
    /// The metadata of `arch` exported with `weights`.
    pub fn new(arch: &Arch, weights: &WeightFile) -> Self {
        let summary = crate::ops::summarize(&crate::ops::inventory(arch));
        let decoding = match arch.prediction {
            Prediction::Ctc { .. } => Decoding::Ctc,
            Prediction::Attention { .. } => Decoding::Attention,
        };
        ModelMetadata {
            strnas_version: env!("CARGO_PKG_VERSION").to_string(),
            model: arch.name.clone(),
            spec_hash: crate::spec::arch_hash(&arch.spec),
            params: summary.params,
            flops: summary.flops,
            charset: arch.charset.clone(),
            decoding,
            batch_max_length: arch.batch_max_length,
            input_height: arch.input.h,
            input_width: arch.input.w,
            input_channels: arch.input.c,
            keep_ratio_pad: arch.keep_ratio_pad,
            normalization: NORMALIZATION.to_string(),
            weights: weights.metadata.get("format").cloned().unwrap_or_else(|| "unknown".into()),
            quantization: None,
        }
    }

    /// The `metadata_props` entries, in the order every strnas export writes them (the exported bytes depend
    /// on it); the quantization keys last, on quantized exports only.
    pub fn to_props(&self) -> Vec<(&'static str, String)> {
        let mut props = self.float_props();
        if let Some(q) = &self.quantization {
            props.push(("quantization", q.scheme.clone()));
            props.push(("quantization_calibration", q.calibration.clone()));
        }
        props
    }

    fn float_props(&self) -> Vec<(&'static str, String)> {
        vec![
            ("strnas_version", self.strnas_version.clone()),
            ("model", self.model.clone()),
            ("spec_hash", self.spec_hash.clone()),
            ("params", self.params.to_string()),
            ("flops", self.flops.to_string()),
            ("charset", self.charset.as_string()),
            ("case_sensitive", self.charset.case_sensitive().to_string()),
            ("decoding", self.decoding.name().to_string()),
            ("batch_max_length", self.batch_max_length.to_string()),
            ("input_height", self.input_height.to_string()),
            ("input_width", self.input_width.to_string()),
            ("input_channels", self.input_channels.to_string()),
            ("keep_ratio_pad", self.keep_ratio_pad.to_string()),
            ("normalization", self.normalization.clone()),
            ("weights", self.weights.clone()),
        ]
    }

    /// Parses the metadata of `model`; `origin` (its path) names it in errors, with the offending key. Every key
    /// [`Self::to_props`] writes must be present.
    pub fn read(model: &ModelProto, origin: &str) -> Result<Self> {
        let props: HashMap<&str, &str> = model.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        let p = Props { props, origin };
        let case_sensitive = p.bool("case_sensitive")?;
        let charset = Charset::from_spec(&crate::spec::file::CharsetSpec { chars: Some(p.get("charset")?.to_string()), case_sensitive })
            .map_err(|e| anyhow!("{origin}: metadata charset: {e}"))?;
        let decoding = match p.get("decoding")? {
            "ctc" => Decoding::Ctc,
            "attention" => Decoding::Attention,
            d => bail!("{origin}: unknown decoding {d:?}"),
        };
        Ok(ModelMetadata {
            strnas_version: p.get("strnas_version")?.to_string(),
            model: p.get("model")?.to_string(),
            spec_hash: p.get("spec_hash")?.to_string(),
            params: p.num("params")?,
            flops: p.num("flops")?,
            charset,
            decoding,
            batch_max_length: p.num("batch_max_length")?,
            input_height: p.num("input_height")?,
            input_width: p.num("input_width")?,
            input_channels: p.num("input_channels")?,
            keep_ratio_pad: p.bool("keep_ratio_pad")?,
            normalization: p.get("normalization")?.to_string(),
            weights: p.get("weights")?.to_string(),
            quantization: match p.props.get("quantization") {
                Some(scheme) => Some(Quantization { scheme: scheme.to_string(), calibration: p.get("quantization_calibration")?.to_string() }),
                None => None,
            },
        })
    }

    /// Reads the metadata of the ONNX file at `path`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let proto = strnas_onnx::from_bytes(&bytes).with_context(|| format!("{}: not an ONNX model", path.display()))?;
        Self::read(&proto, &path.display().to_string())
    }
}

/// Metadata key lookups whose errors name the model and the key.
struct Props<'a> {
    props: HashMap<&'a str, &'a str>,
    origin: &'a str,
}

impl Props<'_> {
    fn get(&self, k: &str) -> Result<&str> {
        self.props.get(k).copied().ok_or_else(|| anyhow!("{}: metadata key {k} is missing (not exported by strnas?)", self.origin))
    }

    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T> {
        self.get(k)?.parse().map_err(|_| anyhow!("{}: metadata key {k} is not a number", self.origin))
    }

    fn bool(&self, k: &str) -> Result<bool> {
        match self.get(k)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => bail!("{}: metadata key {k} is {v:?}, expected true or false", self.origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_round_trip_in_the_export_order() {
        let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny/tiny-crnn-ctc.yaml");
        let arch = crate::spec::load(&spec).unwrap();
        let w = crate::weights::random_init(&arch, 0);
        let m = ModelMetadata::new(&arch, &w);
        let props = m.to_props();
        let keys: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "strnas_version", "model", "spec_hash", "params", "flops", "charset", "case_sensitive", "decoding", "batch_max_length",
                "input_height", "input_width", "input_channels", "keep_ratio_pad", "normalization", "weights"
            ]
        );
        let mut proto = crate::export::export(&arch, &w).unwrap();
        let written: Vec<(String, String)> = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        assert_eq!(written, props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>());
        assert_eq!(ModelMetadata::read(&proto, "m.onnx").unwrap().to_props(), props);
        let mut q = m.clone();
        q.quantization = Some(Quantization { scheme: "int8-qdq".into(), calibration: "minmax over 2 images of valid".into() });
        let mut qproto = proto.clone();
        strnas_onnx::set_metadata(&mut qproto, &q.to_props());
        assert_eq!(ModelMetadata::read(&qproto, "q.onnx").unwrap().quantization, q.quantization);
        proto.metadata_props.retain(|e| e.key != "input_width");
        let e = ModelMetadata::read(&proto, "m.onnx").unwrap_err().to_string();
        assert_eq!(e, "m.onnx: metadata key input_width is missing (not exported by strnas?)");
    }
}
