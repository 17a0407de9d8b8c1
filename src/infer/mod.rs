//! Recognising images with an exported strnas model: the model's preprocessing and decoding contract (read
//! from its metadata), image batches in, text out.
//!
//! Owns the strnas model interface (input `image` `[n, C, H, W]`; outputs `logits` `[n, steps, classes]`
//! float32 and `indices` `[n, steps]` int64, looked up by name) and the turning of those outputs into text
//! with a confidence. Runs models only through [`crate::runtime`]'s engines; depends on `export::metadata`
//! (the contract) and `data` (preprocessing, label decoding). Must not depend on `verify`, `bench` or `cli`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::export::metadata::ModelMetadata;
use crate::runtime::{Data, Engine, HostTensor, ModelRef, Runtime};

/// Name of a strnas model's input.
pub const IMAGE: &str = "image";
/// Name of the per-step scores output, `[n, steps, classes]` float32.
pub const LOGITS: &str = "logits";
/// Name of the per-step argmax output, `[n, steps]` int64.
pub const INDICES: &str = "indices";

/// How a model wants its images and how its outputs decode, as recorded in its metadata.
#[derive(Debug, Clone)]
pub struct Contract {
    pub preprocess: Preprocess,
    pub codec: LabelCodec,
}

impl Contract {
    /// The contract recorded in `meta`.
    pub fn from_metadata(meta: &ModelMetadata) -> Self {
        let preprocess =
            Preprocess { height: meta.input_height, width: meta.input_width, channels: meta.input_channels, keep_ratio_pad: meta.keep_ratio_pad };
        let codec = LabelCodec { charset: meta.charset.clone(), decoding: meta.decoding, max_len: meta.batch_max_length as usize };
        Contract { preprocess, codec }
    }

    /// Reads the contract from the strnas metadata of the ONNX file at `model`; errors name the file and key.
    pub fn read(model: &Path) -> Result<Self> {
        Ok(Self::from_metadata(&ModelMetadata::from_file(model)?))
    }

    /// `[C, H, W]` of one preprocessed image.
    pub fn chw(&self) -> [usize; 3] {
        chw(&self.preprocess)
    }
}

/// `[C, H, W]` of one image preprocessed by `pre`.
pub fn chw(pre: &Preprocess) -> [usize; 3] {
    [pre.channels as usize, pre.height as usize, pre.width as usize]
}

/// Per-step outputs of a batch: `logits` `[n, steps, classes]` row-major, `indices` `[n, steps]`.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub logits: Vec<f32>,
    pub indices: Vec<i64>,
    pub steps: usize,
    pub classes: usize,
}

/// One image's recognised text and its confidence (product of the per-step maximum probabilities).
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    pub text: String,
    pub confidence: f32,
}

impl Outputs {
    /// The `logits` and `indices` tensors of a run (found by name among `tensors`), checked for type and shape;
    /// `origin` names the model in errors.
    pub fn from_tensors(tensors: Vec<HostTensor>, origin: &str) -> Result<Self> {
        let find = |name: &str| {
            tensors.iter().find(|t| t.name == name).ok_or_else(|| anyhow!("{origin}: the model produced no output {name:?} (not a strnas recogniser?)"))
        };
        let (logits, indices) = (find(LOGITS)?, find(INDICES)?);
        let Data::F32(l) = &logits.data else { bail!("{origin}: output {LOGITS:?} is {}, expected float32", logits.data.elem()) };
        let Data::I64(i) = &indices.data else { bail!("{origin}: output {INDICES:?} is {}, expected int64", indices.data.elem()) };
        let &[n, steps, classes] = logits.shape.as_slice() else {
            bail!("{origin}: output logits has rank {} (expected [batch, steps, classes])", logits.shape.len())
        };
        if indices.shape.as_slice() != [n, steps] {
            bail!("{origin}: output indices has shape {:?}, expected [{n}, {steps}] to match logits", indices.shape);
        }
        Ok(Outputs { logits: l.clone(), indices: i.clone(), steps, classes })
    }

    /// The decoded text of every image of the batch.
    pub fn texts(&self, codec: &LabelCodec) -> Vec<String> {
        self.indices.chunks(self.steps.max(1)).map(|k| codec.decode(k).0).collect()
    }

    /// Text and confidence of every image of the batch.
    pub fn recognitions(&self, codec: &LabelCodec) -> Vec<Recognition> {
        let steps = self.steps.max(1);
        self.indices
            .chunks(steps)
            .zip(self.logits.chunks(steps * self.classes.max(1)))
            .map(|(idx, logits)| {
                let maxp: Vec<f32> = logits
                    .chunks(self.classes.max(1))
                    .map(|row| {
                        let m = row.iter().cloned().fold(f32::MIN, f32::max);
                        let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
                        1.0 / z
                    })
                    .collect();
                let (text, used) = codec.decode(idx);
                Recognition { text, confidence: LabelCodec::confidence(&maxp, used) }
            })
            .collect()
    }
}

/// A strnas model on one engine: feeds preprocessed image batches, returns [`Outputs`].
pub struct Recognizer {
    engine: Box<dyn Engine>,
    origin: String,
}

impl Recognizer {
    /// Opens the ONNX file `model` on `runtime` on the CPU with `threads` intra-op threads.
    pub fn open(runtime: Runtime, model: &Path, threads: usize, ort_lib: Option<&Path>) -> Result<Self> {
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        let origin = model.display().to_string();
        let engine = crate::runtime::open(runtime, crate::runtime::Device::Cpu, &ModelRef { source: &origin, onnx: &bytes, network: None }, threads, ort_lib)?;
        Ok(Recognizer { engine, origin })
    }

    /// Wraps an engine already open on a strnas model; `origin` names the model in errors.
    pub fn new(engine: Box<dyn Engine>, origin: &str) -> Self {
        Recognizer { engine, origin: origin.to_string() }
    }

    pub fn runtime(&self) -> Runtime {
        self.engine.info().runtime
    }

    /// Binds a batch of `n` images (`[n, C, H, W]` row-major, `chw` values each) for [`Self::run_prepared`];
    /// a model the runtime cannot load fails here.
    pub fn prepare(&mut self, images: &[f32], n: usize, chw: [usize; 3]) -> Result<()> {
        let expected = n * chw.iter().product::<usize>();
        if images.len() != expected {
            bail!("{}: {} image values for {n} images of {chw:?} (expected {expected})", self.origin, images.len());
        }
        self.engine.prepare(&[HostTensor::f32(IMAGE, vec![n, chw[0], chw[1], chw[2]], images.to_vec())])
    }

    /// Runs the prepared batch.
    pub fn run_prepared(&mut self) -> Result<Outputs> {
        Outputs::from_tensors(self.engine.run_and_fetch(&[LOGITS, INDICES])?, &self.origin)
    }

    /// Runs a batch of `n` images (`[n, C, H, W]` row-major, `chw` values each).
    pub fn run(&mut self, images: &[f32], n: usize, chw: [usize; 3]) -> Result<Outputs> {
        self.prepare(images, n, chw)?;
        self.run_prepared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> LabelCodec {
        let charset = crate::spec::Charset::from_spec(&crate::spec::file::CharsetSpec { chars: Some("ab".into()), case_sensitive: false }).unwrap();
        LabelCodec { charset, decoding: crate::data::labels::Decoding::Ctc, max_len: 4 }
    }

    #[test]
    fn outputs_are_found_by_name_in_any_order() {
        // 2 images x 3 steps x 3 classes (CTC: blank, a, b).
        let logits = HostTensor::f32(LOGITS, vec![2, 3, 3], (0..18).map(|v| v as f32).collect());
        let indices = HostTensor { name: INDICES.into(), shape: vec![2, 3], data: Data::I64(vec![1, 1, 2, 0, 2, 0]) };
        let o = Outputs::from_tensors(vec![indices, logits], "m.onnx").unwrap();
        assert_eq!((o.steps, o.classes), (3, 3));
        assert_eq!(o.texts(&codec()), ["ab", "b"]);
        let r = o.recognitions(&codec());
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.confidence > 0.0 && r.confidence <= 1.0), "{r:?}");
    }

    #[test]
    fn a_missing_or_mistyped_output_is_an_error_naming_the_model() {
        let logits = HostTensor::f32(LOGITS, vec![1, 2, 3], vec![0.0; 6]);
        let e = Outputs::from_tensors(vec![logits.clone()], "m.onnx").unwrap_err().to_string();
        assert_eq!(e, "m.onnx: the model produced no output \"indices\" (not a strnas recogniser?)");
        let indices = HostTensor::f32(INDICES, vec![1, 2], vec![0.0; 2]);
        let e = Outputs::from_tensors(vec![logits, indices], "m.onnx").unwrap_err().to_string();
        assert_eq!(e, "m.onnx: output \"indices\" is float32, expected int64");
    }
}
