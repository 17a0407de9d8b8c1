//! The over-parameterised network of a search space in tch: every fixed block once, every searchable edge
//! as all of its candidates (variables under `{edge}.ops.{i}`), run along one sampled path (weight steps:
//! only that path runs, so memory is one path's) or through 'two'-mode binary gates (architecture steps).

use tch::nn;
use tch::{Kind, Tensor};

use super::mechanics::Pair;
use crate::latency::Space;
use crate::ops::torch::{path, Ctx, Module};

enum Block {
    Fixed(Box<dyn Module>),
    Mixed { edge: usize, ops: Vec<Box<dyn Module>> },
}

/// How the edges are routed in one forward pass.
pub enum Route<'a> {
    /// One candidate per edge.
    Paths(&'a [usize]),
    /// Per edge, the sampled pair and its gate tensor `[2]` (values 1 for the active op, 0 for the other;
    /// `requires_grad`, so autograd gives `dL/dgate`). The inactive op's output is
    /// detached: its weights get no gradient.
    Gates(&'a [Pair], &'a [Tensor]),
}

pub struct SuperNet {
    blocks: Vec<Block>,
}

impl std::fmt::Debug for SuperNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SuperNet({} blocks)", self.blocks.len())
    }
}

impl SuperNet {
    /// Creates every variable under `root`: fixed blocks at their spec paths, candidates under
    /// `{edge}.ops.{i}`.
    pub fn new(root: &nn::Path, space: &Space) -> Self {
        let mut blocks = vec![];
        for n in crate::ops::network(&space.base) {
            match space.edges.iter().position(|e| e.path == n.path) {
                Some(e) => {
                    let edge = &space.edges[e];
                    let ops = edge.candidates.iter().enumerate().map(|(i, &op)| edge.node(op).layer.tch(&path(root, &format!("{}.ops.{i}", edge.path)))).collect();
                    blocks.push(Block::Mixed { edge: e, ops });
                }
                None => blocks.push(Block::Fixed(n.layer.tch(&path(root, &n.scope)))),
            }
        }
        SuperNet { blocks }
    }

    /// Logits `[b, steps, classes]`, as [`crate::nn::StrNet::forward_t`], along `route`.
    pub fn forward_t(&self, images: &Tensor, text: Option<&Tensor>, train: bool, route: &Route) -> Tensor {
        self.forward_with_features(images, text, train, route).1
    }

    /// The prediction head's input (the sequence features) and the logits, as
    /// [`crate::nn::StrNet::forward_with_features`], along `route`.
    pub fn forward_with_features(&self, images: &Tensor, text: Option<&Tensor>, train: bool, route: &Route) -> (Tensor, Tensor) {
        let ctx = Ctx { image: images, text, train };
        let mut h = images.shallow_clone();
        let mut feats = h.shallow_clone();
        for (i, b) in self.blocks.iter().enumerate() {
            if i + 1 == self.blocks.len() {
                feats = h.shallow_clone();
            }
            h = match b {
                Block::Fixed(m) => m.forward(&h, &ctx),
                Block::Mixed { edge, ops } => match route {
                    Route::Paths(p) => ops[p[*edge]].forward(&h, &ctx),
                    Route::Gates(pairs, gates) => {
                        let pair = pairs[*edge];
                        let g = &gates[*edge];
                        if pair.ops[0] == pair.ops[1] {
                            ops[pair.ops[0]].forward(&h, &ctx)
                        } else {
                            let (a, o) = (pair.active, 1 - pair.active);
                            let ya = ops[pair.ops[a]].forward(&h, &ctx);
                            let yo = ops[pair.ops[o]].forward(&h, &ctx).detach();
                            ya * g.get(a as i64).to_kind(Kind::Float) + yo * g.get(o as i64).to_kind(Kind::Float)
                        }
                    }
                },
            };
        }
        (feats, h)
    }
}

/// Gate tensors for `pairs` on `device`: `[1, 0]` or `[0, 1]` by the active op, requiring grad.
pub fn gates(pairs: &[Pair], device: tch::Device) -> Vec<Tensor> {
    pairs
        .iter()
        .map(|p| {
            let v = if p.active == 0 { [1f32, 0.0] } else { [0.0, 1.0] };
            Tensor::from_slice(&v).to_device(device).set_requires_grad(true)
        })
        .collect()
}
