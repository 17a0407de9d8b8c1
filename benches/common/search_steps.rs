//! The steps the search benches measure, built one way for both (`search`: criterion timings; `search_memory`:
//! peak memory and step time per process): the fixed network's weight step, the supernet's weight step along
//! the fixed network's own ops, and an architecture step ('two'-mode gates, Eq. 1, rescale). Loss, backward and
//! optimizer step included; CPU; fixed inputs (seed 0).

use std::path::Path;

use strnas::data::labels::LabelCodec;
use strnas::latency::Space;
use strnas::rng::Rng;
use strnas::search::mechanics::{self, finish_arch_step};
use strnas::search::supernet::{gates, Route, SuperNet};
use strnas::train::optim::{OptimKind, Optimizer};
use tch::{nn, Device, Kind, Tensor};

/// The space around a spec and one batch of inputs.
pub struct Inputs {
    pub space: Space,
    codec: LabelCodec,
    labels: Vec<String>,
    images: Tensor,
}

impl Inputs {
    /// `spec` relative to the crate root; `batch` random images with cycling short labels.
    pub fn new(spec: &str, batch: i64) -> Self {
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
        let space = Space::around(strnas::spec::load(&spec).unwrap_or_else(|e| panic!("{e}")));
        let codec = LabelCodec::from_arch(&space.base);
        let words = ["hello", "world", "search", "latency", "tiny", "cells", "alpha", "gates"];
        let labels = (0..batch as usize).map(|i| words[i % words.len()].to_string()).collect();
        tch::manual_seed(0);
        let images = Tensor::rand([batch, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        Inputs { space, codec, labels, images }
    }

    /// A weight step of the fixed network (the spec itself), Adadelta.
    pub fn fixed_step(&self) -> impl FnMut() + '_ {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = strnas::nn::StrNet::new(&vs.root(), &self.space.base);
        let mut opt = Optimizer::new(&vs, OptimKind::adadelta());
        move || {
            let _keep = &vs;
            opt.zero_grad();
            strnas::train::loss(&net, &self.codec, &self.images, &self.labels).backward();
            opt.step();
        }
    }

    /// A supernet weight step along the path of the spec's own ops, Adadelta, gradients as the search takes them
    /// ([`Optimizer::backward_for`]).
    pub fn weight_step(&self) -> impl FnMut() + '_ {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SuperNet::new(&vs.root(), &self.space);
        let ops = self.space.ops_of(&self.space.base).expect("the base spec is in its own space");
        let path: Vec<usize> = self.space.edges.iter().zip(&ops).map(|(e, op)| e.candidates.iter().position(|c| c == op).expect("op among the candidates")).collect();
        let mut opt = Optimizer::new(&vs, OptimKind::adadelta());
        move || {
            let _keep = &vs;
            opt.zero_grad();
            // As the search's weight step: gradients held by the optimizer, not left on the candidates.
            let loss = strnas::train::loss_of(&self.codec, &self.images, &self.labels, |t| net.forward_t(&self.images, t, true, &Route::Paths(&path)));
            opt.backward_for(&loss, |_| true);
            opt.step();
        }
    }

    /// A supernet architecture step: two ops per cell sampled, gated forward, Eq. 1, Adam (0, 0.999), rescale.
    pub fn arch_step(&self) -> impl FnMut() + '_ {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SuperNet::new(&vs.root(), &self.space);
        let avs = nn::VarStore::new(Device::Cpu);
        let alphas: Vec<Tensor> = self.space.edges.iter().enumerate().map(|(i, e)| avs.root().var(&format!("a{i}"), &[e.candidates.len() as i64], nn::Init::Const(0.0))).collect();
        let mut aopt = Optimizer::new(&avs, OptimKind::Adam { lr: 1e-3, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
        let mut k = 0u64;
        move || {
            let _keep = (&vs, &avs);
            k += 1;
            let pairs = mechanics::sample_pairs(&alphas, &mut Rng::for_item(1, 2, k));
            let g = gates(&pairs, Device::Cpu);
            aopt.zero_grad();
            let ce = strnas::train::loss_of(&self.codec, &self.images, &self.labels, |t| net.forward_t(&self.images, t, true, &Route::Gates(&pairs, &g)));
            finish_arch_step(&alphas, &pairs, &g, &ce, &mut aopt);
        }
    }
}
