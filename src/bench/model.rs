//! What `strnas bench` measures: an ONNX file (any exporter's) or a spec exported on the fly, its declared
//! inputs resolved to concrete shapes, deterministic input data, and its size figures (params, FLOPs, ops).
//! Strnas metadata is read through [`crate::export::metadata::ModelMetadata`]; the tensors are the runtime
//! layer's.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use strnas_onnx::{Dim, Inspection};

use crate::export::metadata::ModelMetadata;
use crate::rng::Rng;
use crate::runtime::{ConcreteInput, Data, InputData, ModelRef};
use crate::spec::Arch;
use crate::weights::WeightFile;

/// A model ready to load on any runtime.
pub struct BenchModel {
    /// Display name: the strnas model name (with `-int8` for a quantized export), else the file stem; `bench`
    /// adds the file stem when two models given share a name.
    pub name: String,
    /// The path given on the command line.
    pub source: String,
    /// `onnx` or `spec` (exported with random init).
    pub kind: &'static str,
    pub bytes: Vec<u8>,
    pub inspection: Inspection,
    /// The paper's parameter count: the spec's trainable parameters for strnas models (BatchNorm included,
    /// before folding), else the elements of floating-point initializers and Constant tensors.
    pub params: u64,
    pub params_source: &'static str,
    /// FLOPs (2 x multiply-accumulates) at batch 1; for foreign models filled by [`crate::runtime::tract_flops`].
    pub flops: Option<u64>,
    pub flops_source: &'static str,
    /// The network, for the tch baseline (specs only).
    pub arch: Option<Arch>,
    pub weights: Option<WeightFile>,
}

/// Seed of the random weights given to specs benchmarked without weights (latency does not depend on them).
pub const SPEC_SEED: u64 = 0;

impl BenchModel {
    /// Loads `path`: `.yaml`/`.yml` is a spec (exported with random init), anything else is read as ONNX.
    pub fn load(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "yaml" || ext == "yml" {
            let arch = crate::spec::load(path).map_err(|e| anyhow!("{e}"))?;
            Self::from_arch(arch, &path.display().to_string())
        } else {
            let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the model", path.display()))?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Self::from_onnx(bytes, &path.display().to_string(), &stem)
        }
    }

    /// A spec exported with random weights.
    pub fn from_arch(arch: Arch, source: &str) -> Result<Self> {
        let weights = crate::weights::random_init(&arch, SPEC_SEED);
        let proto = crate::export::export(&arch, &weights).with_context(|| format!("{source}: exporting the spec"))?;
        let bytes = strnas_onnx::to_bytes(&proto)?;
        let mut m = Self::from_onnx(bytes, source, &arch.name)?;
        m.kind = "spec";
        m.arch = Some(arch);
        m.weights = Some(weights);
        Ok(m)
    }

    /// An ONNX model from its bytes; strnas metadata (when present) gives the name, params and FLOPs.
    pub fn from_onnx(bytes: Vec<u8>, source: &str, stem: &str) -> Result<Self> {
        let proto = strnas_onnx::from_bytes(&bytes).map_err(|e| anyhow!("{source}: not a valid ONNX model ({e})"))?;
        if proto.graph.is_none() {
            bail!("{source}: not a valid ONNX model (no graph)");
        }
        let inspection = strnas_onnx::inspect(&proto);
        if inspection.inputs.is_empty() {
            bail!("{source}: the model has no inputs to feed");
        }
        // Foreign models (and any whose strnas metadata does not parse) are sized from their weights.
        let meta = ModelMetadata::read(&proto, source).ok();
        let (params, params_source) = match &meta {
            Some(m) => (m.params, "spec"),
            None => (inspection.weight_elements, "onnx weights"),
        };
        let (flops, flops_source) = match &meta {
            Some(m) => (Some(m.flops), "spec"),
            None => (None, "unknown"),
        };
        let name = match meta {
            Some(m) if m.quantization.is_some() => format!("{}-int8", m.model),
            Some(m) => m.model,
            None => stem.to_string(),
        };
        Ok(BenchModel { name, source: source.to_string(), kind: "onnx", bytes, inspection, params, params_source, flops, flops_source, arch: None, weights: None })
    }

    /// The model as the runtime layer loads it (with the network for tch, for specs).
    pub fn model_ref(&self) -> ModelRef<'_> {
        let network = match (&self.arch, &self.weights) {
            (Some(a), Some(w)) => Some((a, w)),
            _ => None,
        };
        ModelRef { source: &self.source, onnx: &self.bytes, network }
    }

    /// Node count (subgraphs included), the op-count gate.
    pub fn ops(&self) -> usize {
        self.inspection.nodes
    }
}

/// `--input-shape [NAME=]D1xD2x...`: a full shape for one input (the first dimension is the batch and is
/// replaced by each `--batch` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeOverride {
    pub input: Option<String>,
    pub dims: Vec<usize>,
}

impl std::str::FromStr for ShapeOverride {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (input, dims) = match s.rsplit_once('=') {
            Some((n, d)) => (Some(n.to_string()), d),
            None => (None, s),
        };
        let dims: Vec<usize> = dims
            .split(['x', ','])
            .map(|d| d.trim().parse::<usize>().ok().filter(|&v| v > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("--input-shape {s:?}: expected [NAME=]D1xD2x... with positive integers, e.g. image=1x3x48x320"))?;
        Ok(ShapeOverride { input, dims })
    }
}

/// Why a batch size cannot be run (not an error: the model declares a fixed batch).
#[derive(Debug)]
pub enum Resolve {
    Inputs(Vec<ConcreteInput>),
    Skip(String),
}

/// Resolves every input of `m` to a concrete shape for `batch`: declared fixed dims, the batch in dim 0, and
/// `overrides` for dynamic ones (by name, or unnamed for a single-input model). Dynamic dims left unresolved
/// are an error naming the input and the flag.
pub fn resolve_inputs(m: &BenchModel, overrides: &[ShapeOverride], batch: usize) -> Result<Resolve> {
    for o in overrides {
        if let Some(n) = &o.input {
            if !m.inspection.inputs.iter().any(|i| &i.name == n) {
                let names: Vec<&str> = m.inspection.inputs.iter().map(|i| i.name.as_str()).collect();
                bail!("{}: --input-shape names input {n:?}, but the model's inputs are {names:?}", m.source);
            }
        }
    }
    let unnamed: Vec<&ShapeOverride> = overrides.iter().filter(|o| o.input.is_none()).collect();
    if unnamed.len() > 1 || (unnamed.len() == 1 && m.inspection.inputs.len() > 1) {
        bail!("{}: the model has {} inputs; name them: --input-shape NAME=D1xD2x...", m.source, m.inspection.inputs.len());
    }
    let mut out = vec![];
    for (idx, decl) in m.inspection.inputs.iter().enumerate() {
        let elem = strnas_onnx::elem_name(decl.elem);
        if !matches!(elem, "float32" | "float64" | "int64" | "int32" | "uint8" | "int8" | "bool") {
            bail!("{}: input {:?} has element type {elem}, which strnas bench cannot feed", m.source, decl.name);
        }
        let given = overrides.iter().find(|o| o.input.as_deref() == Some(&decl.name)).or(if idx == 0 { unnamed.first().copied() } else { None });
        if let Some(g) = given {
            if !decl.dims.is_empty() && g.dims.len() != decl.dims.len() {
                bail!("{}: --input-shape for {:?} has {} dims, the model declares {}", m.source, decl.name, g.dims.len(), decl.dims.len());
            }
        }
        let rank = given.map(|g| g.dims.len()).unwrap_or(decl.dims.len());
        let mut shape = vec![];
        for d in 0..rank {
            let declared = decl.dims.get(d);
            let v = match (d, declared, given) {
                (0, Some(Dim::Fixed(v)), _) if *v as usize != batch => {
                    return Ok(Resolve::Skip(format!("input {:?} has a fixed batch of {v}", decl.name)));
                }
                (0, _, _) => batch,
                (_, Some(Dim::Fixed(v)), Some(g)) if g.dims[d] != *v as usize => {
                    bail!("{}: --input-shape gives {:?} dim {d} = {}, the model fixes it at {v}", m.source, decl.name, g.dims[d]);
                }
                (_, Some(Dim::Fixed(v)), _) => *v as usize,
                (_, _, Some(g)) => g.dims[d],
                (_, Some(Dim::Param(p)), None) => bail!(
                    "{}: input {:?} dim {d} is dynamic ({}); give its shape with --input-shape {}=...",
                    m.source,
                    decl.name,
                    if p.is_empty() { "unnamed" } else { p },
                    decl.name
                ),
                (_, None, None) => unreachable!("rank comes from the declaration when no override is given"),
            };
            shape.push(v);
        }
        if shape.is_empty() {
            bail!("{}: input {:?} declares no shape; give it with --input-shape {}=...", m.source, decl.name, decl.name);
        }
        out.push(ConcreteInput { name: decl.name.clone(), elem: elem.to_string(), shape });
    }
    Ok(Resolve::Inputs(out))
}

/// Seed of the input data every runtime is fed.
pub const INPUT_SEED: u64 = 7;

/// Deterministic data for `inputs` (the same for every runtime, so they compute the same thing): floats uniform
/// in [-1, 1] (what normalised images span), integers and booleans zero (valid token ids and masks for any
/// vocabulary).
pub fn input_data(inputs: &[ConcreteInput], seed: u64) -> Vec<InputData> {
    let mut rng = Rng::new(seed);
    inputs
        .iter()
        .map(|i| {
            let n: usize = i.shape.iter().product();
            let data = match i.elem.as_str() {
                "float32" => Data::F32((0..n).map(|_| rng.range(-1.0, 1.0) as f32).collect()),
                "float64" => Data::F64((0..n).map(|_| rng.range(-1.0, 1.0)).collect()),
                "int64" => Data::I64(vec![0; n]),
                "int32" => Data::I32(vec![0; n]),
                "uint8" => Data::U8(vec![0; n]),
                "int8" => Data::I8(vec![0; n]),
                _ => Data::Bool(vec![false; n]),
            };
            InputData { name: i.name.clone(), shape: i.shape.clone(), data }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_overrides_parse_with_and_without_a_name() {
        assert_eq!("x=1x3x48x320".parse::<ShapeOverride>(), Ok(ShapeOverride { input: Some("x".into()), dims: vec![1, 3, 48, 320] }));
        assert_eq!("1,1,32,100".parse::<ShapeOverride>(), Ok(ShapeOverride { input: None, dims: vec![1, 1, 32, 100] }));
        let e = "x=1x0x2".parse::<ShapeOverride>().unwrap_err();
        assert!(e.contains("--input-shape \"x=1x0x2\""), "{e}");
        assert!("x=axb".parse::<ShapeOverride>().is_err());
    }

    #[test]
    fn strnas_models_resolve_batch_and_skip_nothing() {
        let arch = crate::spec::from_str(crate::bench::gate::CALIBRATION_SPEC).unwrap();
        let m = BenchModel::from_arch(arch, "calibration").unwrap();
        assert_eq!((m.kind, m.params_source, m.flops_source), ("spec", "spec", "spec"));
        let Resolve::Inputs(i) = resolve_inputs(&m, &[], 4).unwrap() else { panic!("skipped") };
        assert_eq!((i[0].name.as_str(), i[0].elem.as_str(), i[0].shape.clone()), ("image", "float32", vec![4, 1, 32, 100]));
        // A fixed dim cannot be overridden with another value.
        let e = resolve_inputs(&m, &["image=1x1x64x100".parse().unwrap()], 1).unwrap_err().to_string();
        assert!(e.contains("dim 2 = 64, the model fixes it at 32"), "{e}");
        let d = input_data(&i, INPUT_SEED);
        let Data::F32(v) = &d[0].data else { panic!() };
        assert_eq!(v.len(), 4 * 32 * 100);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
}
