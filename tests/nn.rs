//! The tch network against the spec contract: variable names, shapes and parameter counts equal the
//! libtorch-free inventory for every shipped spec; forward shapes; the TPS starts at RARE's fiducials.
#![cfg(feature = "torch")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use strnas::nn::StrNet;
use strnas::spec::{self, count::TensorKind};
use tch::{nn, Device, Kind, Tensor};

fn shipped() -> Vec<PathBuf> {
    spec::expand_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("arch_specs")]).unwrap()
}

#[test]
fn varstore_matches_the_spec_inventory_for_every_shipped_spec() {
    for path in shipped() {
        let arch = spec::load(&path).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = StrNet::new(&vs.root(), &arch);
        let got: BTreeMap<String, Vec<usize>> =
            vs.variables().into_iter().map(|(k, v)| (k, v.size().iter().map(|&d| d as usize).collect())).collect();
        let want: BTreeMap<String, Vec<usize>> = spec::count::tensors(&arch).into_iter().map(|t| (t.name, t.shape)).collect();
        assert_eq!(got, want, "{}: VarStore variables differ from the spec inventory", path.display());
        let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        let counted = spec::summarize(&spec::inventory(&arch)).params;
        assert_eq!(trainable as u64, counted, "{}", path.display());
        let buffers = spec::count::tensors(&arch).iter().filter(|t| t.kind == TensorKind::Buffer).count();
        assert_eq!(vs.variables().len() - vs.trainable_variables().len(), buffers, "{}", path.display());
    }
}

fn tiny(name: &str) -> spec::Arch {
    spec::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny").join(name)).unwrap()
}

#[test]
fn forward_shapes_follow_the_head() {
    tch::manual_seed(0);
    let images = Tensor::rand([2, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    for (file, steps, classes) in [("tiny-limited-3x3-ex3-ctc.yaml", 25, 37), ("tiny-limited-3x3-ex3-attn.yaml", 26, 38), ("tiny-crnn-ctc.yaml", 25, 37)] {
        let arch = tiny(file);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = StrNet::new(&vs.root(), &arch);
        let out = tch::no_grad(|| net.forward_t(&images, None, false));
        assert_eq!(out.size(), vec![2, steps, classes], "{file}");
        assert!(out.isfinite().all().int64_value(&[]) == 1, "{file}: non-finite logits");
    }
    // Teacher forcing takes the shifted targets and returns the same shape.
    let arch = tiny("tiny-limited-5x5-ex6-attn.yaml");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = StrNet::new(&vs.root(), &arch);
    let text = Tensor::zeros([2, 26], (Kind::Int64, Device::Cpu));
    let out = net.forward_t(&images, Some(&text), true);
    assert_eq!(out.size(), vec![2, 26, 38]);
}

#[test]
fn tps_starts_at_rare_initial_fiducials() {
    let arch = tiny("tiny-limited-3x3-ex3-ctc.yaml");
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let tps = strnas::nn::TpsNet::new(&root / "rectifier", &arch);
    let images = Tensor::rand([3, 1, 32, 100], (Kind::Float, Device::Cpu));
    let c = tch::no_grad(|| tps.fiducials(&images, false));
    let want: Vec<f32> = spec::tps::initial_fiducials(20).into_iter().map(|v| v as f32).collect();
    let want = Tensor::from_slice(&want).view([1, 20, 2]).expand([3, 20, 2], false);
    let diff = (c - want).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "fiducials at init differ by {diff}");
}
