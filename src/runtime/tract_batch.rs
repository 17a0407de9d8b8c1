//! How tract runs a batch of more than one image: as single-image runs of the batch-1 plan, outputs stacked.
//!
//! tract 0.23 lowers a 1x1 convolution at batch N > 1 to a matrix product whose batch and spatial axes it
//! merges, which moves the input's channel axis in, the output's back out, and leaves the bias as a separate
//! broadcast Add (measured in docs/results.md: on paper-scale limited-3x3-ex3 at batch 8 the Adds and axis moves
//! were 46% of tract's time; per image, batch 8 ran 2.2x slower than batch 1 on tiny-crnn-ctc). At batch 1 the
//! batch axis is unit, none of that happens and the bias fuses into the product. strnas models compute every
//! image independently, so running them image by image gives the same outputs.
//!
//! Contract: [`Batching::of`] says whether a model qualifies (exported by strnas; every input's first axis the
//! same named batch dimension; every output holding that dimension once) and where each output's batch axis
//! is. Other models (foreign ONNX, whose images may interact) run as whole batches. `STRNAS_TRACT_BATCH=whole`
//! turns the split off, for comparisons.

use anyhow::{anyhow, bail, Result};
use tract_onnx::prelude::{TVec, TValue, Tensor};

use super::InputData;

/// A strnas model's batch axes: inputs batch on axis 0, output `i` on `output_axes[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    pub output_axes: Vec<usize>,
}

impl Batching {
    /// The batch axes of `model` (ONNX bytes; `origin` names it in errors) if batches of it may run image by
    /// image (see the module contract), else `None`.
    pub fn of(model: &[u8], origin: &str) -> Result<Option<Batching>> {
        match std::env::var("STRNAS_TRACT_BATCH").as_deref() {
            Err(_) | Ok("" | "split") => {}
            Ok("whole") => return Ok(None),
            Ok(other) => bail!("STRNAS_TRACT_BATCH={other:?}: expected `split` (the default: batches run image by image) or `whole`"),
        }
        let proto = strnas_onnx::from_bytes(model).map_err(|e| anyhow!("{origin}: not an ONNX model: {e:#}"))?;
        if proto.producer_name != "strnas" {
            return Ok(None);
        }
        Ok(Self::from_decls(&strnas_onnx::inspect(&proto)))
    }

    fn from_decls(model: &strnas_onnx::Inspection) -> Option<Batching> {
        use strnas_onnx::Dim;
        let Some(Dim::Param(batch)) = model.inputs.first()?.dims.first() else { return None };
        if batch.is_empty() || !model.inputs.iter().all(|i| i.dims.first() == Some(&Dim::Param(batch.clone()))) {
            return None;
        }
        let output_axes = model
            .outputs
            .iter()
            .map(|o| {
                let at: Vec<usize> = o.dims.iter().enumerate().filter(|(_, d)| **d == Dim::Param(batch.clone())).map(|(i, _)| i).collect();
                (at.len() == 1).then(|| at[0])
            })
            .collect::<Option<Vec<usize>>>()?;
        Some(Batching { output_axes })
    }

    /// The batch size `inputs` split into, when it is over 1 and every input holds it on axis 0; else `None`.
    pub fn images(&self, inputs: &[InputData]) -> Option<usize> {
        let n = *inputs.first()?.shape.first()?;
        (n > 1 && inputs.iter().all(|i| i.shape.first() == Some(&n))).then_some(n)
    }

    /// `inputs` (a batch of `n` images) as `n` single-image input sets.
    pub fn split(inputs: &[InputData], n: usize) -> Vec<Vec<InputData>> {
        (0..n).map(|i| inputs.iter().map(|x| x.item(i)).collect()).collect()
    }

    /// The outputs of single-image runs (`runs[image][output]`) stacked along each output's batch axis.
    pub fn join(&self, runs: &[TVec<TValue>]) -> Result<Vec<Tensor>> {
        self.output_axes
            .iter()
            .enumerate()
            .map(|(o, &axis)| {
                let parts = runs.iter().map(|r| r.get(o).cloned()).collect::<Option<Vec<TValue>>>();
                let parts = parts.ok_or_else(|| anyhow!("tract: a single-image run returned fewer than {} outputs", o + 1))?;
                Tensor::stack_tensors(axis, &parts).map_err(|e| anyhow!("tract: stacking output {o} of the single-image runs: {e:#}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strnas_onnx::{Dim, Inspection, ValueDecl};

    fn decl(name: &str, dims: &[Dim]) -> ValueDecl {
        ValueDecl { name: name.into(), elem: 1, dims: dims.to_vec() }
    }

    fn p(s: &str) -> Dim {
        Dim::Param(s.into())
    }

    #[test]
    fn batch_axes_come_from_the_named_dimension() {
        let m = Inspection {
            inputs: vec![decl("image", &[p("batch"), Dim::Fixed(1), Dim::Fixed(32), Dim::Fixed(100)])],
            outputs: vec![decl("logits", &[Dim::Fixed(26), p("batch"), Dim::Fixed(37)]), decl("ids", &[p("batch"), Dim::Fixed(26)])],
            ..Default::default()
        };
        assert_eq!(Batching::from_decls(&m), Some(Batching { output_axes: vec![1, 0] }));
    }

    #[test]
    fn models_without_one_batch_axis_per_output_run_whole() {
        let fixed = Inspection { inputs: vec![decl("x", &[Dim::Fixed(4), Dim::Fixed(3)])], outputs: vec![decl("y", &[Dim::Fixed(4)])], ..Default::default() };
        assert_eq!(Batching::from_decls(&fixed), None);
        let reduced = Inspection { inputs: vec![decl("x", &[p("n"), Dim::Fixed(3)])], outputs: vec![decl("sum", &[Dim::Fixed(3)])], ..Default::default() };
        assert_eq!(Batching::from_decls(&reduced), None, "an output without the batch axis mixes images");
        let twice = Inspection { inputs: vec![decl("x", &[p("n"), Dim::Fixed(3)])], outputs: vec![decl("gram", &[p("n"), p("n")])], ..Default::default() };
        assert_eq!(Batching::from_decls(&twice), None);
        let other = Inspection {
            inputs: vec![decl("x", &[p("n"), Dim::Fixed(3)]), decl("y", &[p("m"), Dim::Fixed(3)])],
            outputs: vec![decl("z", &[p("n")])],
            ..Default::default()
        };
        assert_eq!(Batching::from_decls(&other), None);
    }

    #[test]
    fn split_then_join_restores_the_batch() {
        use tract_onnx::prelude::IntoTValue;
        let x = InputData::f32("x", vec![3, 2, 2], (0..12).map(|v| v as f32).collect());
        let images = Batching::split(std::slice::from_ref(&x), 3);
        assert_eq!(images.len(), 3);
        assert_eq!(images[1][0], InputData::f32("x", vec![1, 2, 2], vec![4.0, 5.0, 6.0, 7.0]));
        let as_runs = |images: &[Vec<InputData>]| -> Vec<TVec<TValue>> {
            images.iter().map(|im| im.iter().map(|t| super::super::tract_engine::tract_tensor(t).unwrap().into_tvalue()).collect()).collect()
        };
        let joined = Batching { output_axes: vec![0] }.join(&as_runs(&images)).unwrap();
        assert_eq!(joined[0], super::super::tract_engine::tract_tensor(&x).unwrap());
        // An output batched on axis 1: image i's values land at [.., i, ..].
        let per_image: Vec<Vec<InputData>> = (0..3).map(|i| vec![InputData::f32("y", vec![2, 1], vec![i as f32, 10.0 + i as f32])]).collect();
        let joined = Batching { output_axes: vec![1] }.join(&as_runs(&per_image)).unwrap();
        assert_eq!(joined[0], Tensor::from_shape(&[2, 3], &[0.0f32, 1.0, 2.0, 10.0, 11.0, 12.0]).unwrap());
    }
}
