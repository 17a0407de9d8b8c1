//! The engine interface every runtime implements, the runtime choice, and [`open`], which picks the
//! implementation.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Device, HostTensor, InputData};
use crate::spec::Arch;
use crate::weights::WeightFile;

/// A runtime a model can run on. The command-line and JSON spelling is the short name (`ort`, `tract`, `tch`);
/// bench reports and baselines store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// onnxruntime (CPU, or CUDA with --device cuda)
    Ort,
    /// tract (CPU)
    Tract,
    /// the eager libtorch network (specs only; builds with the `torch` feature)
    Tch,
}

impl Runtime {
    /// The short name: command line, JSON, bench tables.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Ort => "ort",
            Runtime::Tract => "tract",
            Runtime::Tch => "tch",
        }
    }

    /// The product name, for messages and `strnas verify`'s table (`onnxruntime`, `tract`, `tch`).
    pub fn full_name(self) -> &'static str {
        match self {
            Runtime::Ort => "onnxruntime",
            Runtime::Tract => "tract",
            Runtime::Tch => "tch",
        }
    }
}

/// What ran the model, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub runtime: Runtime,
    pub version: String,
    pub device: Device,
    /// onnxruntime's execution provider, tract's executor or libtorch's backend.
    pub provider: String,
    pub threads: usize,
    /// strnas's engine code ([`super::ENGINE_BUILD`]): a baseline recorded with other engine code is stale
    /// (empty in reports written before it was recorded).
    #[serde(default)]
    pub engine_build: String,
}

/// What an engine loads: the ONNX model (onnxruntime, tract) and, for tch, the network it was exported from.
#[derive(Clone, Copy)]
pub struct ModelRef<'a> {
    /// Names the model in errors (a path, or a label such as `calibration workload`).
    pub source: &'a str,
    /// ONNX protobuf bytes.
    pub onnx: &'a [u8],
    /// The spec and weights, for the eager tch network; `None` for foreign models.
    pub network: Option<(&'a Arch, &'a WeightFile)>,
}

/// A model loaded on one runtime.
///
/// Contract: [`Engine::prepare`] binds inputs once (copying them to the device); [`Engine::run`] is one
/// synchronised inference on them whose outputs stay where the runtime writes them (what `bench` times);
/// [`Engine::run_and_fetch`] is one inference whose named outputs are copied to the host (what `verify` and
/// `infer` read). Errors name the model.
pub trait Engine {
    fn info(&self) -> &EngineInfo;
    /// Binds `inputs` (one batch size) for the following runs.
    fn prepare(&mut self, inputs: &[InputData]) -> Result<()>;
    /// One synchronised inference on the prepared inputs; outputs are not copied back.
    fn run(&mut self) -> Result<()>;
    /// One inference on the prepared inputs, returning the outputs called `names`, in that order. A name the
    /// model does not output is an error listing the outputs it has.
    fn run_and_fetch(&mut self, names: &[&str]) -> Result<Vec<HostTensor>>;
}

/// Loads `model` on `runtime` at `device` with `threads` intra-op threads (for tch, 0 keeps libtorch's
/// default). Errors name the model and the runtime. tract builds its plan per input shape in
/// [`Engine::prepare`], so a model tract cannot load fails there.
pub fn open(runtime: Runtime, device: Device, model: &ModelRef, threads: usize, ort_lib: Option<&Path>) -> Result<Box<dyn Engine>> {
    match runtime {
        Runtime::Ort => Ok(Box::new(super::ort_engine::OrtEngine::open(model, device, threads, ort_lib)?)),
        Runtime::Tract => Ok(Box::new(super::tract_engine::TractEngine::open(model, device, threads)?)),
        Runtime::Tch => open_tch(model, device, threads),
    }
}

#[cfg(feature = "torch")]
fn open_tch(model: &ModelRef, device: Device, threads: usize) -> Result<Box<dyn Engine>> {
    Ok(Box::new(super::tch_engine::TchEngine::open(model, device, threads)?))
}

#[cfg(not(feature = "torch"))]
fn open_tch(model: &ModelRef, _: Device, _: usize) -> Result<Box<dyn Engine>> {
    anyhow::bail!("{}: this strnas was built without libtorch (--no-default-features); rebuild with the `torch` feature for --runtime tch", model.source)
}

/// Loads one block of a network alone on eager libtorch (what `strnas latency build --runtime tch` times):
/// `node`'s tch module with the tensors of `weights` named as in the whole network. Its inputs are those of
/// [`crate::export::export_block`]'s graph (`x`, plus `image` for the TPS sampler) in the same layouts, and its one
/// output is called `output_name` (the exported block's output name, so results compare by name).
pub fn open_tch_block(node: &crate::ops::Node, weights: &WeightFile, output_name: &str, device: Device, threads: usize) -> Result<Box<dyn Engine>> {
    open_block(node, weights, output_name, device, threads)
}

#[cfg(feature = "torch")]
fn open_block(node: &crate::ops::Node, weights: &WeightFile, output_name: &str, device: Device, threads: usize) -> Result<Box<dyn Engine>> {
    Ok(Box::new(super::tch_engine::TchEngine::open_block(node, weights, output_name, device, threads)?))
}

#[cfg(not(feature = "torch"))]
fn open_block(node: &crate::ops::Node, _: &WeightFile, _: &str, _: Device, _: usize) -> Result<Box<dyn Engine>> {
    anyhow::bail!("{}: this strnas was built without libtorch (--no-default-features); rebuild with the `torch` feature for --runtime tch", node.path)
}

/// The error for an output name the model lacks: names the model, the runtime and the outputs it has.
pub(super) fn missing_output(source: &str, runtime: Runtime, name: &str, have: &[String]) -> anyhow::Error {
    anyhow::anyhow!("{source}: {}: the model has no output {name:?} (its outputs: {have:?})", runtime.full_name())
}
