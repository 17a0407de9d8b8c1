//! Weightless graphs: a model with the data of its large float initializers removed, small enough to commit
//! (the latency gate's reference graphs), and refilled before a runtime loads it.
//!
//! Contract: [`strip`] keeps everything but the data of float32 initializers of at least [`MIN_ELEMENTS`]
//! elements (dims, names, type, nodes, small and integer tensors stay, so shapes, indices and axes keep their
//! values); the result is deterministic, so two exports of the same graph strip to the same bytes.
//! [`refill`] gives every stripped initializer data again: the donor model's tensor of the same name, type and
//! dims when there is one (so the two sides of an A/B comparison compute on the same numbers), else small
//! deterministic pseudo-random values. Latency does not depend on weight values for these graphs (no
//! data-dependent control flow: the attention decoder is unrolled), only on shapes and ops.

use std::collections::HashMap;

use anyhow::{bail, Result};
use onnx_protobuf::{tensor_proto::DataType, ModelProto, TensorProto};

/// Float initializers with at least this many elements lose their data in [`strip`]; smaller ones (scalars
/// such as Clip bounds, tiny vectors) keep their values.
pub const MIN_ELEMENTS: u64 = 16;

fn elements(t: &TensorProto) -> u64 {
    t.dims.iter().map(|&d| d.max(0) as u64).product()
}

fn is_f32(t: &TensorProto) -> bool {
    t.data_type == DataType::FLOAT as i32
}

/// True when `t` is a float32 initializer whose data [`strip`] removed (or never had any).
fn is_stripped(t: &TensorProto) -> bool {
    is_f32(t) && elements(t) > 0 && t.raw_data.is_empty() && t.float_data.is_empty() && t.external_data.is_empty()
}

/// `model` without the data of its float32 initializers of at least [`MIN_ELEMENTS`] elements.
pub fn strip(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        for t in g.initializer.iter_mut().filter(|t| is_f32(t) && elements(t) >= MIN_ELEMENTS && t.external_data.is_empty()) {
            t.raw_data.clear();
            t.float_data.clear();
        }
    }
    m
}

/// Number of initializers of `model` that [`strip`] removed the data of (0: a complete model).
pub fn stripped_count(model: &ModelProto) -> usize {
    model.graph.as_ref().map_or(0, |g| g.initializer.iter().filter(|t| is_stripped(t)).count())
}

/// Gives every stripped initializer of `model` data again: the `donor`'s same-named float32 initializer when its
/// dims match, else deterministic values in [-0.05, 0.05) seeded by the tensor's name. Returns how many
/// tensors came from the donor and how many were generated.
pub fn refill(model: &mut ModelProto, donor: Option<&ModelProto>) -> Result<(usize, usize)> {
    let donors: HashMap<&str, &TensorProto> =
        donor.and_then(|d| d.graph.as_ref()).map(|g| g.initializer.iter().filter(|t| is_f32(t)).map(|t| (t.name.as_str(), t)).collect()).unwrap_or_default();
    let Some(g) = model.graph.as_mut() else { bail!("no graph") };
    let (mut copied, mut generated) = (0, 0);
    for t in g.initializer.iter_mut().filter(|t| is_stripped(t)) {
        let n = elements(t) as usize;
        match donors.get(t.name.as_str()).filter(|d| d.dims == t.dims && !is_stripped(d)) {
            Some(d) if !d.raw_data.is_empty() => {
                t.raw_data = d.raw_data.clone();
                copied += 1;
            }
            Some(d) if d.float_data.len() == n => {
                t.raw_data = d.float_data.iter().flat_map(|v| v.to_le_bytes()).collect();
                copied += 1;
            }
            _ => {
                t.raw_data = values(&t.name, n).flat_map(|v| v.to_le_bytes()).collect();
                generated += 1;
            }
        }
    }
    Ok((copied, generated))
}

/// `n` values in [-0.05, 0.05) from a xorshift64* stream seeded by FNV-1a of `name`.
fn values(name: &str, n: usize) -> impl Iterator<Item = f32> {
    let mut s = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)) | 1;
    (0..n).map(move |_| {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let u = (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        (u - 0.5) * 0.1
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{from_bytes, to_bytes, Attr, Dim, Elem, GraphBuilder};

    fn model(w: f32) -> ModelProto {
        let mut b = GraphBuilder::new("g");
        b.input("x", Elem::F32, &[Dim::Param("batch".into()), Dim::Fixed(8)]).unwrap();
        b.initializer_f32("w", &[8, 8], &vec![w; 64]).unwrap();
        b.initializer_f32("bias", &[8], &[0.5; 8]).unwrap();
        b.initializer_i64("shape", &[2], &[-1, 8]).unwrap();
        b.node("MatMul", "mm", &["x", "w"], &["y0"], &[]).unwrap();
        b.node("Add", "add", &["y0", "bias"], &["y1"], &[]).unwrap();
        b.node("Reshape", "r", &["y1", "shape"], &["y"], &[("allowzero", Attr::Int(0))]).unwrap();
        b.output("y", Elem::F32, &[Dim::Param("batch".into()), Dim::Fixed(8)]).unwrap();
        b.finish("test", &[])
    }

    #[test]
    fn strip_keeps_structure_and_small_tensors_and_is_deterministic() {
        let (a, b) = (strip(&model(1.0)), strip(&model(2.0)));
        // Weight values do not reach the stripped bytes: two weightings of one graph strip identically.
        assert_eq!(to_bytes(&a).unwrap(), to_bytes(&b).unwrap());
        assert_eq!(stripped_count(&a), 1);
        let g = a.graph.as_ref().unwrap();
        assert_eq!(g.node.len(), 3);
        let by = |n: &str| g.initializer.iter().find(|t| t.name == n).unwrap();
        assert!(by("w").raw_data.is_empty() && by("w").dims == vec![8, 8]);
        assert_eq!(by("bias").raw_data.len(), 8 * 4, "below MIN_ELEMENTS: kept");
        assert_eq!(by("shape").raw_data.len(), 2 * 8, "integer tensors: kept");
        assert_eq!(stripped_count(&model(1.0)), 0);
    }

    #[test]
    fn refill_copies_from_the_donor_by_name_and_dims_else_generates() {
        let donor = model(3.0);
        let mut m = from_bytes(&to_bytes(&strip(&model(1.0))).unwrap()).unwrap();
        assert_eq!(refill(&mut m, Some(&donor)).unwrap(), (1, 0));
        assert_eq!(to_bytes(&m).unwrap(), to_bytes(&donor).unwrap());
        // A donor whose tensor of that name has other dims does not give it: generated instead.
        let mut other = GraphBuilder::new("g");
        other.initializer_f32("w", &[4, 16], &[1.0; 64]).unwrap();
        let mut m = strip(&model(1.0));
        assert_eq!(refill(&mut m, Some(&other.finish("test", &[]))).unwrap(), (0, 1));
        // No donor: deterministic values in range, the same on every call.
        let (mut x, mut y) = (strip(&model(1.0)), strip(&model(1.0)));
        assert_eq!(refill(&mut x, None).unwrap(), (0, 1));
        refill(&mut y, None).unwrap();
        assert_eq!(to_bytes(&x).unwrap(), to_bytes(&y).unwrap());
        let w = &x.graph.as_ref().unwrap().initializer[0];
        let vals: Vec<f32> = w.raw_data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals.len(), 64);
        assert!(vals.iter().all(|v| (-0.05..0.05).contains(v)) && vals.iter().any(|&v| v != vals[0]), "{vals:?}");
        assert_eq!(stripped_count(&x), 0);
    }
}
