//! tract: the graph form and plan builder (concrete input facts, optimised, runnable), the engine (one plan per
//! input shapes; batches of strnas models image by image, see [`super::tract_batch`]), the executor's thread
//! count, and the cost model behind [`tract_flops`].

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use super::engine::missing_output;
use super::tract_batch::Batching;
use super::{ConcreteInput, Data, Device, Engine, EngineInfo, HostTensor, InputData, ModelRef, Runtime};

/// An optimised, runnable tract model.
pub type TractPlan = Arc<tract_onnx::prelude::TypedRunnableModel>;

/// Sets tract's matrix-product executor: `threads` > 1 multithreads, else single-threaded. Process-wide.
pub fn set_tract_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    set_default_executor(if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread });
}

/// tract resolves ops by type alone: a node of another domain (a custom op named like a standard one) would run
/// as the standard op. Such a model is refused, naming the node and its domain, as onnxruntime refuses it.
fn check_domains(model: &[u8], origin: &str) -> Result<()> {
    let proto = strnas_onnx::from_bytes(model).map_err(|e| anyhow!("{origin}: not an ONNX model: {e:#}"))?;
    if let Some(g) = proto.graph.as_ref() {
        if let Some(n) = g.node.iter().find(|n| !matches!(n.domain.as_str(), "" | "ai.onnx")) {
            bail!("{origin}: tract cannot run node {:?} ({}) of domain {:?}: only standard ONNX ops (domain \"\" or ai.onnx) are supported", n.name, n.op_type, n.domain);
        }
    }
    Ok(())
}

/// The graph form strnas runs on tract: `model` with every bilinear, border-padded GridSample rewritten as
/// gathers ([`strnas_onnx::lower::grid_sample_as_gather`]: the same outputs, 20x faster under tract 0.23)
/// and every strided depthwise convolution as a stride-1 one and subsampling gathers
/// ([`strnas_onnx::lower::strided_depthwise_as_gather`]: the same outputs), and how many nodes each rewrote.
/// Refuses nodes of other domains (see [`check_domains`]). For comparisons, `STRNAS_TRACT_FORM=gather`
/// rewrites GridSample only and `STRNAS_TRACT_FORM=standard` runs the model as exported; after them,
/// `STRNAS_TRACT_DEPTHWISE` picks the depthwise convolutions' form (see [`DepthwiseForm`]).
pub fn tract_form(model: &[u8], origin: &str) -> Result<(Vec<u8>, Rewrites)> {
    check_domains(model, origin)?;
    let (gather, strided) = match std::env::var("STRNAS_TRACT_FORM").as_deref() {
        Err(_) | Ok("" | "all") => (true, true),
        Ok("gather") => (true, false),
        Ok("standard") => (false, false),
        Ok(other) => bail!("STRNAS_TRACT_FORM={other:?}: expected `all` (the default), `gather` (GridSample only) or `standard`"),
    };
    let form = DepthwiseForm::from_env()?;
    let mut proto = strnas_onnx::from_bytes(model).map_err(|e| anyhow!("{origin}: not an ONNX model: {e:#}"))?;
    let mut rewrites = Rewrites { form, ..Rewrites::default() };
    if gather {
        (proto, rewrites.grid_samples) = strnas_onnx::lower::grid_sample_as_gather(&proto).map_err(|e| anyhow!("{origin}: rewriting GridSample for tract: {e:#}"))?;
    }
    if strided {
        (proto, rewrites.depthwise) = strnas_onnx::lower::strided_depthwise_as_gather(&proto).map_err(|e| anyhow!("{origin}: rewriting strided depthwise convolutions for tract: {e:#}"))?;
    }
    let formed = match form {
        DepthwiseForm::Kernel => None,
        DepthwiseForm::Taps => Some(strnas_onnx::lower::depthwise_as_taps(&proto)),
        DepthwiseForm::Groups(n) => Some(strnas_onnx::lower::depthwise_as_groups(&proto, n)),
    };
    if let Some(formed) = formed {
        (proto, rewrites.formed) = formed.map_err(|e| anyhow!("{origin}: rewriting depthwise convolutions for tract ({form}): {e:#}"))?;
    }
    if rewrites == (Rewrites { form, ..Rewrites::default() }) {
        return Ok((model.to_vec(), rewrites));
    }
    Ok((strnas_onnx::to_bytes(&proto)?, rewrites))
}

/// How tract computes depthwise convolutions (`STRNAS_TRACT_DEPTHWISE`): `kernel` (the default), tract's
/// depthwise kernel; `taps`, as shifted multiply-adds ([`strnas_onnx::lower::depthwise_as_taps`]); `groups:N`,
/// as a grouped convolution of N channels per group with zeros off the diagonal
/// ([`strnas_onnx::lower::depthwise_as_groups`]: N times the multiply-adds on tract's matrix-product kernel).
/// The other forms are for comparisons: on our models both run slower (docs/results.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DepthwiseForm {
    #[default]
    Kernel,
    Taps,
    Groups(usize),
}

impl DepthwiseForm {
    /// From the value of `STRNAS_TRACT_DEPTHWISE` (empty: the default).
    pub fn parse(v: &str) -> Result<Self> {
        let per_group = v.strip_prefix("groups:").map(|n| n.parse::<usize>().ok().filter(|&n| n >= 2));
        match (v, per_group) {
            ("" | "kernel", _) => Ok(Self::Kernel),
            ("taps", _) => Ok(Self::Taps),
            (_, Some(Some(n))) => Ok(Self::Groups(n)),
            _ => bail!("STRNAS_TRACT_DEPTHWISE={v:?}: expected `kernel` (the default), `taps` or `groups:N` (N >= 2 channels per group)"),
        }
    }

    fn from_env() -> Result<Self> {
        Self::parse(&std::env::var("STRNAS_TRACT_DEPTHWISE").unwrap_or_default())
    }
}

impl std::fmt::Display for DepthwiseForm {
    /// The setting that selects the form (`STRNAS_TRACT_DEPTHWISE=groups:4`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kernel => write!(f, "STRNAS_TRACT_DEPTHWISE=kernel"),
            Self::Taps => write!(f, "STRNAS_TRACT_DEPTHWISE=taps"),
            Self::Groups(n) => write!(f, "STRNAS_TRACT_DEPTHWISE=groups:{n}"),
        }
    }
}

/// Whether tract runs convolutions channel-last: `STRNAS_TRACT_LAYOUT=nhwc` applies tract's own `conv_nhwc`
/// transform to the decluttered model (each convolution NHWC, the layout carried across the chain of convolutions
/// and elementwise ops); unset or `nchw`, the layout as exported. For comparisons: under tract 0.23 the
/// channel-last depthwise kernel runs ~3x slower than the NCHW one on our models (docs/results.md).
pub fn tract_channel_last() -> Result<bool> {
    match std::env::var("STRNAS_TRACT_LAYOUT").as_deref() {
        Err(_) | Ok("" | "nchw") => Ok(false),
        Ok("nhwc") => Ok(true),
        Ok(other) => bail!("STRNAS_TRACT_LAYOUT={other:?}: expected `nchw` (the default) or `nhwc` (tract's conv_nhwc transform)"),
    }
}

/// How many nodes [`tract_form`] rewrote, per rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrites {
    pub grid_samples: usize,
    /// Strided depthwise convolutions run at stride 1 and subsampled.
    pub depthwise: usize,
    /// The depthwise convolutions' form and how many took it (none under the default, `Kernel`).
    pub form: DepthwiseForm,
    pub formed: usize,
}

/// The engine description's note on [`tract_form`]'s rewrites.
fn form_note(r: Rewrites) -> String {
    let mut note = String::new();
    if r.grid_samples > 0 {
        note += &format!("; GridSample x{} as gathers", r.grid_samples);
    }
    if r.depthwise > 0 {
        note += &format!("; strided depthwise x{} at stride 1 + gathers", r.depthwise);
    }
    match r.form {
        DepthwiseForm::Kernel => {}
        DepthwiseForm::Taps => note += &format!("; depthwise x{} as shifted multiply-adds", r.formed),
        DepthwiseForm::Groups(n) => note += &format!("; depthwise x{} as groups of {n}", r.formed),
    }
    note
}

/// A tract plan for `model` (protobuf bytes in [`tract_form`]; `origin` names it in errors) with concrete input
/// facts (`facts[i]` for input `i`; none: the model's declared input 0 at batch 1), optimised and runnable.
pub fn tract_plan(model: &[u8], origin: &str, facts: &[(tract_onnx::prelude::DatumType, Vec<usize>)]) -> Result<TractPlan> {
    use tract_onnx::prelude::*;
    check_domains(model, origin)?;
    let mut m = tract_onnx::onnx().model_for_read(&mut &model[..]).map_err(|e| anyhow!("{origin}: tract cannot load the model: {e:#}"))?;
    if facts.is_empty() {
        let fact = m.input_fact(0).map_err(|e| anyhow!("{origin}: tract: {e:#}"))?.clone();
        let dims: Vec<usize> = fact
            .shape
            .dims()
            .skip(1)
            .map(|d| tract_onnx::tract_hir::infer::Factoid::concretize(d).and_then(|d| tract_onnx::tract_core::internal::DimLike::to_usize(&d).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("{origin}: input dimensions besides batch must be fixed"))?;
        let dt = tract_onnx::tract_hir::infer::Factoid::concretize(&fact.datum_type).unwrap_or(f32::datum_type());
        m = m.with_input_fact(0, InferenceFact::dt_shape(dt, [&[1][..], &dims].concat())).map_err(|e| anyhow!("{origin}: tract: {e:#}"))?;
    }
    for (i, (dt, shape)) in facts.iter().enumerate() {
        m = m.with_input_fact(i, InferenceFact::dt_shape(*dt, shape.clone())).map_err(|e| anyhow!("{origin}: tract: input {i}: {e:#}"))?;
    }
    let channel_last = tract_channel_last()?;
    m.into_typed()
        .and_then(|m| m.into_decluttered())
        .and_then(|mut m| {
            independent_runs(&mut m);
            if channel_last {
                use tract_onnx::tract_core::transform::get_transform;
                get_transform("conv_nhwc")?.ok_or_else(|| anyhow!("this tract build has no conv_nhwc transform"))?.transform(&mut m)?;
            }
            m.into_optimized()
        })
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow!("{origin}: tract cannot optimise the model: {e:#}"))
}

/// Makes every run of `model` independent of the runs before it on the same state, as ONNX defines an
/// inference: tract's Scan (its form of an ONNX LSTM) otherwise carries its last hidden state into the next run
/// (for streaming models), so a second run on one state would start the BiLSTM from the first run's end.
fn independent_runs(model: &mut tract_onnx::prelude::TypedModel) {
    use tract_onnx::tract_core::ops::scan::Scan;
    for node in &mut model.nodes {
        if let Some(scan) = node.op_as_mut::<Scan>() {
            scan.reset_every_turn = true;
        }
    }
}

/// A model on tract: plans optimised per input shapes (cached), states reused across runs (one, or one per
/// worker when a split batch runs its images in parallel).
pub(super) struct TractEngine {
    bytes: Vec<u8>,
    origin: String,
    /// Optimised plans by input shapes.
    plans: HashMap<Vec<Vec<usize>>, TractPlan>,
    /// One state per worker: several only for a split batch with `threads` > 1 (see [`TractEngine::run_feeds`]).
    states: Vec<tract_onnx::prelude::TypedSimpleState>,
    /// Where batches of this model may run image by image (see [`Batching`]).
    batching: Option<Batching>,
    /// The bound inputs: one feed per run, one per image when the batch is split (more than one feed: the
    /// outputs are stacked back).
    feeds: Vec<Feed>,
    /// The ONNX graph's output names in order (read on the first fetch).
    output_names: Option<Vec<String>>,
    info: EngineInfo,
}

impl TractEngine {
    /// Sets the process-wide executor for `threads`; builds no plan yet (see [`Engine::prepare`]).
    pub(super) fn open(model: &ModelRef, device: Device, threads: usize) -> Result<Self> {
        if device != Device::Cpu {
            bail!("{}: tract runs on the CPU only (drop --device {device} for tract)", model.source);
        }
        set_tract_threads(threads);
        let (bytes, rewritten) = tract_form(model.onnx, model.source)?;
        let batching = Batching::of(&bytes, model.source)?;
        let batch_note = match (&batching, threads) {
            (None, _) => String::new(),
            (Some(_), 0 | 1) => "; batches run image by image".into(),
            (Some(_), t) => format!("; batches run image by image, {t} at a time"),
        };
        let layout_note = if tract_channel_last()? { "; convolutions channel-last (conv_nhwc)" } else { "" };
        let executor = if threads > 1 { format!("multithread executor ({threads})") } else { "single thread".into() };
        let info = EngineInfo {
            runtime: Runtime::Tract,
            version: super::TRACT_VERSION.into(),
            device,
            provider: format!("{executor}{}{layout_note}{batch_note}", form_note(rewritten)),
            threads,
            engine_build: super::ENGINE_BUILD.into(),
        };
        // The plan is built per input shape in `prepare`; a model tract cannot load fails there, before timing.
        Ok(TractEngine {
            bytes,
            origin: model.source.to_string(),
            plans: HashMap::new(),
            states: vec![],
            batching,
            feeds: vec![],
            output_names: None,
            info,
        })
    }

    fn output_names(&mut self) -> Result<&[String]> {
        if self.output_names.is_none() {
            let proto = strnas_onnx::from_bytes(&self.bytes).map_err(|e| anyhow!("{}: not a valid ONNX model ({e})", self.origin))?;
            let names = proto.graph.as_ref().map(|g| g.output.iter().map(|o| o.name.clone()).collect()).unwrap_or_default();
            self.output_names = Some(names);
        }
        Ok(self.output_names.as_deref().unwrap_or_default())
    }

    /// Runs every feed, outputs in feed order. With one state the feeds run in turn, each on the executor
    /// [`set_tract_threads`] chose. With several (a split batch, `threads` > 1) the images are shared out in
    /// contiguous runs, one worker thread per state, each single-threaded: image-level parallelism, which keeps
    /// both cores busy where tract's intra-op threading of small products does not.
    fn run_feeds(&mut self) -> Result<Vec<Feed>> {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let origin = &self.origin;
        let split = self.feeds.len() > 1;
        // `first`: the index of `feeds[0]` in the batch, to name a failing image.
        let run = |state: &mut tract_onnx::prelude::TypedSimpleState, feeds: &[Feed], first: usize| {
            feeds
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    state.run(f.clone()).map_err(|e| match split {
                        true => anyhow!("{origin}: tract: run failed on image {} of the batch: {e:#}", first + i),
                        false => anyhow!("{origin}: tract: run failed: {e:#}"),
                    })
                })
                .collect::<Result<Vec<_>>>()
        };
        let per = self.feeds.len().div_ceil(self.states.len().max(1));
        match self.states.as_mut_slice() {
            [] => bail!("tract: run before prepare"),
            [state] => run(state, &self.feeds, 0),
            states => {
                let joined: Vec<_> = std::thread::scope(|scope| {
                    let workers: Vec<_> = states
                        .iter_mut()
                        .zip(self.feeds.chunks(per))
                        .enumerate()
                        .map(|(k, (state, feeds))| scope.spawn(move || multithread_tract_scope(Executor::SingleThread, || run(state, feeds, k * per))))
                        .collect();
                    // Every worker is joined before any result is read, so a panic is reported, not re-raised.
                    workers.into_iter().map(|w| w.join()).collect()
                });
                let mut out = Vec::with_capacity(self.feeds.len());
                for result in joined {
                    let outputs = result.map_err(|panic| {
                        let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                        anyhow!("{origin}: tract: a worker thread panicked: {why}")
                    })??;
                    out.extend(outputs);
                }
                Ok(out)
            }
        }
    }
}

pub(super) fn datum(d: &Data) -> tract_onnx::prelude::DatumType {
    use tract_onnx::prelude::DatumType as D;
    match d {
        Data::F32(_) => D::F32,
        Data::F64(_) => D::F64,
        Data::I64(_) => D::I64,
        Data::I32(_) => D::I32,
        Data::U8(_) => D::U8,
        Data::I8(_) => D::I8,
        Data::Bool(_) => D::Bool,
    }
}

pub(super) fn tract_tensor(i: &InputData) -> Result<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::Tensor;
    let s = &i.shape;
    match &i.data {
        Data::F32(d) => Tensor::from_shape(s, d),
        Data::F64(d) => Tensor::from_shape(s, d),
        Data::I64(d) => Tensor::from_shape(s, d),
        Data::I32(d) => Tensor::from_shape(s, d),
        Data::U8(d) => Tensor::from_shape(s, d),
        Data::I8(d) => Tensor::from_shape(s, d),
        Data::Bool(d) => Tensor::from_shape(s, d),
    }
    .map_err(|e| anyhow!("tract: building input {:?}: {e:#}", i.name))
}

/// Copies a tract output into a [`HostTensor`] (element types as in [`Data`]).
fn host_tensor(origin: &str, name: &str, t: &tract_onnx::prelude::Tensor) -> Result<HostTensor> {
    use tract_onnx::prelude::DatumType as D;
    fn values<T: tract_onnx::prelude::Datum + Copy>(origin: &str, name: &str, t: &tract_onnx::prelude::Tensor) -> Result<Vec<T>> {
        Ok(t.to_plain_array_view::<T>().map_err(|e| anyhow!("{origin}: tract: output {name:?}: {e:#}"))?.iter().copied().collect())
    }
    let data = match t.datum_type() {
        D::F32 => Data::F32(values(origin, name, t)?),
        D::F64 => Data::F64(values(origin, name, t)?),
        D::I64 => Data::I64(values(origin, name, t)?),
        D::I32 => Data::I32(values(origin, name, t)?),
        D::U8 => Data::U8(values(origin, name, t)?),
        D::I8 => Data::I8(values(origin, name, t)?),
        D::Bool => Data::Bool(values(origin, name, t)?),
        other => bail!("{origin}: tract: output {name:?} has type {other:?}, which strnas cannot read"),
    };
    Ok(HostTensor { name: name.to_string(), shape: t.shape().to_vec(), data })
}

impl Engine for TractEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn prepare(&mut self, inputs: &[InputData]) -> Result<()> {
        // Nothing of an earlier binding survives a failed one.
        (self.states, self.feeds) = (vec![], vec![]);
        let (facts, feeds) = feeds(self.batching.as_ref(), inputs)?;
        let key: Vec<Vec<usize>> = facts.iter().map(|(_, s)| s.clone()).collect();
        let plan = match self.plans.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = tract_plan(&self.bytes, &self.origin, &facts)?;
                self.plans.insert(key, p.clone());
                p
            }
        };
        let workers = workers(feeds.len(), self.info.threads);
        self.states = (0..workers).map(|_| plan.spawn().map_err(|e| anyhow!("{}: tract: {e:#}", self.origin))).collect::<Result<_>>()?;
        self.feeds = feeds;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        self.run_feeds().map(drop)
    }

    fn run_and_fetch(&mut self, names: &[&str]) -> Result<Vec<HostTensor>> {
        let have = self.output_names()?.to_vec();
        let index = names
            .iter()
            .map(|n| have.iter().position(|h| h == n).ok_or_else(|| missing_output(&self.origin, Runtime::Tract, n, &have)))
            .collect::<Result<Vec<_>>>()?;
        let runs = self.run_feeds()?;
        let out: Vec<tract_onnx::prelude::Tensor> = match (&self.batching, self.feeds.len() > 1) {
            (Some(b), true) => b.join(&runs).map_err(|e| anyhow!("{}: {e:#}", self.origin))?,
            _ => runs.into_iter().flatten().map(tract_onnx::prelude::IntoTensor::into_tensor).collect(),
        };
        names
            .iter()
            .zip(index)
            .map(|(n, i)| {
                let t = out.get(i).ok_or_else(|| anyhow!("{}: tract: the plan returned {} outputs, expected {}", self.origin, out.len(), have.len()))?;
                host_tensor(&self.origin, n, t)
            })
            .collect()
    }
}

/// How many workers run `images` single-image feeds with `threads` threads: contiguous runs of
/// ceil(images / threads) images each, so none is left without work.
fn workers(images: usize, threads: usize) -> usize {
    let per = images.div_ceil(threads.max(1)).max(1);
    images.div_ceil(per)
}

/// A plan input's element type and shape.
pub(super) type Fact = (tract_onnx::prelude::DatumType, Vec<usize>);
/// The input values of one run.
pub(super) type Feed = tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>;

/// The plan's input facts for `inputs` and the feeds that run them: one feed of the whole batch, or, where
/// `batching` applies to it (see [`Batching::images`]), batch-1 facts and one feed per image.
pub(super) fn feeds(batching: Option<&Batching>, inputs: &[InputData]) -> Result<(Vec<Fact>, Vec<Feed>)> {
    use tract_onnx::prelude::IntoTValue;
    for i in inputs {
        let want: usize = i.shape.iter().product();
        if i.data.len() != want {
            bail!("tract: input {:?} has {} values for shape {:?} ({want} expected)", i.name, i.data.len(), i.shape);
        }
    }
    let images = batching.and_then(|b| b.images(inputs));
    let facts = inputs
        .iter()
        .map(|i| {
            let mut shape = i.shape.clone();
            if images.is_some() {
                shape[0] = 1;
            }
            (datum(&i.data), shape)
        })
        .collect();
    let feed = |inputs: &[InputData]| inputs.iter().map(|i| tract_tensor(i).map(|t| t.into_tvalue())).collect::<Result<_>>();
    let feeds = match images {
        Some(n) => Batching::split(inputs, n).iter().map(|image| feed(image)).collect::<Result<_>>()?,
        None => vec![feed(inputs)?],
    };
    Ok((facts, feeds))
}

/// FLOPs (2 x multiply-accumulates) of one inference of `model` (ONNX bytes; `origin` names it in errors) with
/// `inputs`, from tract's cost model over the decluttered graph, recurrent bodies (LSTM, GRU, Scan) multiplied
/// by their iteration counts. For models without strnas metadata. Counts convolutions and matrix products as the
/// spec count does, plus reductions (a pooling's sums), which tract also costs as multiply-accumulates.
pub fn tract_flops(model: &[u8], origin: &str, inputs: &[ConcreteInput]) -> Result<u64> {
    use tract_onnx::prelude::*;
    check_domains(model, origin)?;
    use tract_onnx::tract_core::ops::{scan::Scan, Cost};
    fn fma(m: &TypedModel) -> TractResult<i64> {
        let mut total = 0i64;
        for node in m.nodes() {
            let facts = m.node_input_facts(node.id)?;
            if let Some(scan) = node.op_as::<Scan>() {
                let iters = scan.iteration_count(&facts).map(|d| d.to_i64()).transpose()?.unwrap_or(1);
                total += fma(&scan.body)? * iters;
            } else {
                for (c, n) in node.op.cost(&facts)? {
                    if let Cost::FMA(_) = c {
                        total += n.to_i64()?;
                    }
                }
            }
        }
        Ok(total)
    }
    let mut m = tract_onnx::onnx().model_for_read(&mut &model[..]).map_err(|e| anyhow!("{origin}: tract cannot load the model: {e:#}"))?;
    for (i, inp) in inputs.iter().enumerate() {
        let dt = match inp.elem.as_str() {
            "float32" => DatumType::F32,
            "float64" => DatumType::F64,
            "int64" => DatumType::I64,
            "int32" => DatumType::I32,
            "uint8" => DatumType::U8,
            "int8" => DatumType::I8,
            _ => DatumType::Bool,
        };
        m = m.with_input_fact(i, InferenceFact::dt_shape(dt, inp.shape.clone())).map_err(|e| anyhow!("{e:#}"))?;
    }
    let typed = m.into_typed().and_then(|m| m.into_decluttered()).map_err(|e| anyhow!("{origin}: tract: {e:#}"))?;
    Ok(2 * fma(&typed).map_err(|e| anyhow!("{origin}: tract cost model: {e:#}"))? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depthwise_forms_parse_and_name_their_setting() {
        for (v, form) in [("", DepthwiseForm::Kernel), ("kernel", DepthwiseForm::Kernel), ("taps", DepthwiseForm::Taps), ("groups:2", DepthwiseForm::Groups(2)), ("groups:16", DepthwiseForm::Groups(16))] {
            assert_eq!(DepthwiseForm::parse(v).unwrap(), form, "{v:?}");
        }
        assert_eq!(DepthwiseForm::Groups(4).to_string(), "STRNAS_TRACT_DEPTHWISE=groups:4");
        for bad in ["groups:1", "groups:", "groups:x", "tap", "Groups:4"] {
            let e = DepthwiseForm::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("STRNAS_TRACT_DEPTHWISE={bad:?}: expected")), "{e}");
        }
    }

    #[test]
    fn workers_each_get_images() {
        // (images, threads) -> workers: ceil(images / threads) images each, no idle worker.
        for (images, threads, want) in [(8, 2, 2), (3, 2, 2), (5, 4, 3), (1, 4, 1), (4, 0, 1), (4, 1, 1)] {
            assert_eq!(workers(images, threads), want, "{images} images, {threads} threads");
        }
    }

    #[test]
    fn an_input_whose_values_do_not_fill_its_shape_is_an_error() {
        let short = HostTensor::f32("image", vec![2, 3], vec![0.0; 5]);
        let batching = Batching { output_axes: vec![0] };
        for b in [None, Some(&batching)] {
            let err = feeds(b, std::slice::from_ref(&short)).unwrap_err().to_string();
            assert_eq!(err, "tract: input \"image\" has 5 values for shape [2, 3] (6 expected)");
        }
    }
}
