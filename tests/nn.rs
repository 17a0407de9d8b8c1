//! The tch network against the spec contract: variable names, shapes and parameter counts equal the
//! libtorch-free inventory for every shipped spec; forward shapes; the TPS starts at RARE's fiducials.
#![cfg(feature = "torch")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use strnas::nn::StrNet;
use strnas::ops::{self, TensorKind};
use strnas::spec;
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
        let want: BTreeMap<String, Vec<usize>> = ops::tensors(&arch).into_iter().map(|t| (t.name, t.shape)).collect();
        assert_eq!(got, want, "{}: VarStore variables differ from the spec inventory", path.display());
        let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        let counted = ops::summarize(&ops::inventory(&arch)).params;
        assert_eq!(trainable as u64, counted, "{}", path.display());
        let buffers = ops::tensors(&arch).iter().filter(|t| t.kind == TensorKind::Buffer).count();
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
    let tps = strnas::nn::TpsNet::new(&root, &arch);
    let images = Tensor::rand([3, 1, 32, 100], (Kind::Float, Device::Cpu));
    let c = tch::no_grad(|| tps.fiducials(&images, false));
    let want: Vec<f32> = spec::tps::initial_fiducials(20).into_iter().map(|v| v as f32).collect();
    let want = Tensor::from_slice(&want).view([1, 20, 2]).expand([3, 20, 2], false);
    let diff = (c - want).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "fiducials at init differ by {diff}");
}

/// With source fiducials equal to the target fiducials the TPS grid is the reference's pixel-centre grid
/// P = (2i - W + 1) / W (not ±1 at the borders), and align_corners = true then samples half a pixel in.
/// Worked out for W = 100, H = 32: P[0][0] = (-99/100, -31/32); a horizontal ramp image(x) = x sampled there
/// gives (P_x + 1) / 2 * (W - 1) = 0.495, and at column 50: P_x = 1/100 -> 49.995.
#[test]
fn tps_grid_for_target_fiducials_is_the_pixel_centre_grid() {
    let arch = tiny("tiny-limited-3x3-ex3-ctc.yaml");
    let vs = nn::VarStore::new(Device::Cpu);
    let tps = strnas::nn::TpsNet::new(&vs.root(), &arch);
    let mut c = vec![];
    for row in [-1.0f32, 1.0] {
        for i in 0..10 {
            c.extend([-1.0 + 2.0 * i as f32 / 9.0, row]);
        }
    }
    let c = Tensor::from_slice(&c).view([1, 20, 2]);
    let grid = tps.grid(&c);
    assert_eq!(grid.size(), vec![1, 32, 100, 2]);
    let at = |y: i64, x: i64, k: i64| grid.double_value(&[0, y, x, k]);
    assert!((at(0, 0, 0) + 0.99).abs() < 1e-5 && (at(0, 0, 1) + 31.0 / 32.0).abs() < 1e-5, "{} {}", at(0, 0, 0), at(0, 0, 1));
    assert!((at(31, 99, 0) - 0.99).abs() < 1e-5 && (at(31, 99, 1) - 31.0 / 32.0).abs() < 1e-5);
    assert!((at(7, 50, 0) - 0.01).abs() < 1e-5);
    let ramp = Tensor::arange(100, (Kind::Float, Device::Cpu)).view([1, 1, 1, 100]).expand([1, 1, 32, 100], false).contiguous();
    let out = strnas::nn::TpsNet::sample(&ramp, &grid);
    assert!((out.double_value(&[0, 0, 0, 0]) - 0.495).abs() < 1e-3, "{}", out.double_value(&[0, 0, 0, 0]));
    assert!((out.double_value(&[0, 0, 5, 50]) - 49.995).abs() < 1e-3);
}

/// The attention decoder against a plain f64 re-implementation of deep-text-recognition-benchmark's equations
/// on fixed random weights: e = score(tanh(i2h(H) + h2h(h))), alpha = softmax_T(e), context = alpha^T H,
/// LSTMCell([context, onehot(prev)]), logits = generator(h), greedy feedback of the argmax from [GO].
#[test]
fn attention_greedy_decoding_matches_the_equations() {
    let (hid, d, classes, steps, t) = (8usize, 6usize, 7usize, 5usize, 4usize);
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let att = strnas::nn::AttentionNet::new(&(&vs.root() / "prediction"), hid as u32, d as u32, classes as u32, steps as u32);
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            v.copy_(&(Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.7));
        }
    });
    let feats = Tensor::randn([2, t as i64, d as i64], (Kind::Float, Device::Cpu));
    let got = tch::no_grad(|| att.decode(&feats, None));
    assert_eq!(got.size(), vec![2, steps as i64, classes as i64]);

    let vars = vs.variables();
    let w = |n: &str| -> Vec<f64> { Vec::<f32>::try_from(vars[n].contiguous().view(-1)).unwrap().into_iter().map(f64::from).collect() };
    let (i2h, h2h, h2h_b, score) = (w("prediction.cell.i2h.weight"), w("prediction.cell.h2h.weight"), w("prediction.cell.h2h.bias"), w("prediction.cell.score.weight"));
    let (wih, whh, bih, bhh) = (w("prediction.cell.rnn.weight_ih"), w("prediction.cell.rnn.weight_hh"), w("prediction.cell.rnn.bias_ih"), w("prediction.cell.rnn.bias_hh"));
    let (gw, gb) = (w("prediction.generator.weight"), w("prediction.generator.bias"));
    // y = W x (+ b), W row-major [out, in].
    let mv = |m: &[f64], x: &[f64], b: Option<&[f64]>| -> Vec<f64> {
        let n = x.len();
        (0..m.len() / n).map(|r| (0..n).map(|k| m[r * n + k] * x[k]).sum::<f64>() + b.map_or(0.0, |b| b[r])).collect()
    };
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let fv: Vec<f64> = Vec::<f32>::try_from(feats.contiguous().view(-1)).unwrap().into_iter().map(f64::from).collect();
    for b in 0..2 {
        let hs: Vec<&[f64]> = (0..t).map(|i| &fv[(b * t + i) * d..(b * t + i + 1) * d]).collect();
        let proj: Vec<Vec<f64>> = hs.iter().map(|x| mv(&i2h, x, None)).collect();
        let (mut h, mut c) = (vec![0.0; hid], vec![0.0; hid]);
        let mut prev = 0usize;
        for s in 0..steps {
            let hp = mv(&h2h, &h, Some(&h2h_b));
            let e: Vec<f64> = proj.iter().map(|p| mv(&score, &p.iter().zip(&hp).map(|(a, b)| (a + b).tanh()).collect::<Vec<_>>(), None)[0]).collect();
            let m = e.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = e.iter().map(|v| (v - m).exp()).sum();
            let alpha: Vec<f64> = e.iter().map(|v| (v - m).exp() / z).collect();
            let mut input: Vec<f64> = (0..d).map(|k| (0..t).map(|i| alpha[i] * hs[i][k]).sum()).collect();
            input.extend((0..classes).map(|k| if k == prev { 1.0 } else { 0.0 }));
            let g: Vec<f64> = mv(&wih, &input, Some(&bih)).iter().zip(mv(&whh, &h, Some(&bhh))).map(|(a, b)| a + b).collect();
            for k in 0..hid {
                let (ig, fg, gg, og) = (sig(g[k]), sig(g[hid + k]), g[2 * hid + k].tanh(), sig(g[3 * hid + k]));
                c[k] = fg * c[k] + ig * gg;
                h[k] = og * c[k].tanh();
            }
            let logits = mv(&gw, &h, Some(&gb));
            for (k, want) in logits.iter().enumerate() {
                let have = got.double_value(&[b as i64, s as i64, k as i64]);
                assert!((have - want).abs() < 1e-4, "sample {b} step {s} class {k}: tch {have}, equations {want}");
            }
            prev = (0..classes).max_by(|&i, &j| logits[i].total_cmp(&logits[j])).unwrap();
        }
    }
}

#[test]
fn a_failing_forward_is_an_error_not_a_panic_or_zero_timings() {
    let arch = tiny("tiny-crnn-ctc.yaml");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = StrNet::new(&vs.root(), &arch);
    // Three channels into a one-channel stem: libtorch rejects the convolution.
    let wrong = Tensor::zeros([1, 3, 32, 100], (Kind::Float, Device::Cpu));
    let e = strnas::eval::tch_eval::time_forward(&net, &wrong, 4, 1, 2, 0.0).unwrap_err().to_string();
    assert!(e.starts_with("timing a forward pass at batch 1: ") && e.len() > 40, "{e}");
    let ok = Tensor::zeros([1, 1, 32, 100], (Kind::Float, Device::Cpu));
    let t = strnas::eval::tch_eval::time_forward(&net, &ok, 2, 1, 2, 0.0).unwrap();
    assert!(t.batch1.runs >= 2 && t.batch1.median_ms > 0.0, "{t:?}");
}
