//! INT8 export: the float export of a spec, its activation ranges calibrated ([`super::calibrate`]), rewritten
//! into onnxruntime's QDQ form ([`strnas_onnx::quantize`]: Conv, Gemm and MatMul with int8 weights per output
//! channel and uint8 activations per tensor; the TPS sampler, LSTMs, softmax and the attention decoder's control
//! ops stay float), with the quantization recorded in its metadata.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use strnas_onnx::quantize::Quantized;
use strnas_onnx::ModelProto;

use super::calibrate::{describe, feeds, observe, CalibConfig, Method};
use super::metadata::{ModelMetadata, Quantization};
use crate::data::image::Preprocess;
use crate::runtime::HostTensor;
use crate::spec::Arch;
use crate::weights::WeightFile;

/// The `quantization` metadata value of an INT8 export with `weight_bits`-bit weights (and LSTM weights stored
/// int8 when `lstm_int8`).
pub fn scheme(weight_bits: u32, lstm_int8: bool) -> String {
    let lstm = if lstm_int8 { "; LSTM weights int8 per gate row, weight-only (computed in float)" } else { "" };
    format!("int8-qdq: weights {weight_bits}-bit symmetric per output channel (int8), activations uint8 asymmetric per tensor (Conv, Gemm, MatMul){lstm}")
}

/// A quantized model and what was quantized.
pub struct Int8Export {
    pub model: ModelProto,
    /// Nodes run on int8 weights, per op type.
    pub quantized: BTreeMap<String, usize>,
    /// Compute nodes left float, per op type.
    pub float: BTreeMap<String, usize>,
    /// Calibration images used.
    pub images: usize,
}

/// The INT8 model of `arch` with `weights`, calibrated on `cfg`'s images under onnxruntime.
pub fn export_int8(arch: &Arch, weights: &WeightFile, cfg: &CalibConfig) -> Result<Int8Export> {
    if cfg.count == 0 {
        bail!("--calib-count must be positive");
    }
    if cfg.method == Method::Percentile && !(50.0..=100.0).contains(&cfg.percentile) {
        bail!("--calib-percentile must lie in [50, 100], got {}", cfg.percentile);
    }
    let float = super::export(arch, weights)?;
    let chw = [arch.input.c as usize, arch.input.h as usize, arch.input.w as usize];
    let feeds = feeds(&float, Preprocess::from_arch(arch), chw, cfg)?;
    let images = feeds.iter().map(|f| f[0].shape[0]).sum();
    let q = quantize(&float, &feeds, cfg.method, cfg.percentile, cfg.weight_bits, cfg.ort_lib.as_deref())?;
    let mut meta = ModelMetadata::new(arch, weights);
    let method = match cfg.method {
        Method::Minmax => "minmax".to_string(),
        Method::Percentile => format!("percentile {}", cfg.percentile),
    };
    meta.quantization =
        Some(Quantization { scheme: scheme(cfg.weight_bits, cfg.lstm_int8), calibration: format!("{method} over {images} images of {}", describe(&cfg.data)) });
    let (mut quantized, mut float) = (q.quantized, q.float);
    let mut model = q.model;
    if cfg.lstm_int8 {
        let (m, n) = strnas_onnx::quantize::quantize_lstm_weights(&model)?;
        model = m;
        if n > 0 {
            quantized.insert("LSTM (int8 weights, float compute)".into(), n);
            if let Some(left) = float.get_mut("LSTM") {
                *left -= n.min(*left);
            }
            float.retain(|_, v| *v > 0);
        }
    }
    strnas_onnx::set_metadata(&mut model, &meta.to_props());
    let problems = strnas_onnx::check_structure(&model);
    if !problems.is_empty() {
        bail!("internal error: the quantized graph is malformed: {}", problems.join("; "));
    }
    Ok(Int8Export { model, quantized, float, images })
}

/// The QDQ form of any float strnas graph (a whole model or one block) with ranges observed on `inputs` (one run,
/// minmax): what latency tables time for an INT8 deployment. The scales follow these inputs, but the kernels
/// onnxruntime picks, and so the time, depend only on the graph's form.
pub fn quantize_for_timing(model: &ModelProto, inputs: &[HostTensor], weight_bits: u32, ort_lib: Option<&Path>) -> Result<ModelProto> {
    Ok(quantize(model, &[inputs.to_vec()], Method::Minmax, 100.0, weight_bits, ort_lib)?.model)
}

/// The QDQ form of `model` with the ranges of its calibration tensors observed over `feeds`.
fn quantize(model: &ModelProto, feeds: &[Vec<HostTensor>], method: Method, percentile: f64, weight_bits: u32, ort_lib: Option<&Path>) -> Result<Quantized> {
    let tensors = strnas_onnx::quantize::calibration_tensors(model);
    let ranges = observe(model, &tensors, feeds, method, percentile, ort_lib)?;
    strnas_onnx::quantize::quantize_int8(model, &ranges, weight_bits)
}
