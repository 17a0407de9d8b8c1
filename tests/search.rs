//! ProxylessNAS mechanics (Cai et al. 2019, mit-han-lab/proxylessnas): Eq. 1 against finite differences, the
//! rescale, the latency term alone, a constructed loss, and the supernet's routes.
#![cfg(feature = "torch")]

mod common;
use common::make_synth;

use strnas::latency::{EdgeCosts, Space};
use strnas::rng::Rng;
use strnas::search::mechanics::{self, arch_loss, expected_latency, finish_arch_step, softmax, LatencyLoss, Pair};
use strnas::search::supernet::{gates, Route, SuperNet};
use strnas::train::optim::{OptimKind, Optimizer};
use tch::{nn, Device, Kind, Tensor};

fn arch_vs(sizes: &[usize], seed: i64) -> (nn::VarStore, Vec<Tensor>) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let alphas = sizes.iter().enumerate().map(|(e, &n)| vs.root().var(&format!("e{e}"), &[n as i64], nn::Init::Randn { mean: 0.0, stdev: 1e-3 })).collect();
    (vs, alphas)
}

/// The reference's arch optimizer: Adam with betas (0, 0.999).
fn arch_adam(vs: &nn::VarStore, lr: f64) -> Optimizer {
    Optimizer::new(vs, OptimKind::Adam { lr, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 })
}

#[test]
fn eq1_gradient_matches_finite_differences() {
    // One edge of 4 candidates; ops 1 and 3 sampled. L = <w, y> with y the gated output, so dL/dgate_j =
    // <w, o_j> and Eq. 1 is exactly the gradient of <w, sum_j softmax(alpha_pair)_j o_j>.
    let alpha = Tensor::from_slice(&[0.3f64, -0.2, 0.5, 0.1]).set_requires_grad(true);
    let mut rng = Rng::new(3);
    let outs: Vec<Vec<f64>> = (0..4).map(|_| (0..5).map(|_| rng.normal()).collect()).collect();
    let w: Vec<f64> = (0..5).map(|_| rng.normal()).collect();
    let l = mechanics::logits_of(&alpha);
    let pp = softmax(&[l[1], l[3]]);
    let pair = Pair { ops: [1, 3], active: 0, probs: [pp[0], pp[1]] };
    // Gate gradients through autograd, as the supernet produces them.
    let g = gates(&[pair], Device::Cpu).remove(0);
    let oa = Tensor::from_slice(&outs[1]);
    let ob = Tensor::from_slice(&outs[3]);
    let y = &oa * g.get(0).to_kind(Kind::Double) + ob.detach() * g.get(1).to_kind(Kind::Double);
    (y * Tensor::from_slice(&w)).sum(Kind::Double).backward();
    let gg = Vec::<f64>::try_from(g.grad().to_kind(Kind::Double)).unwrap();
    let dot = |o: &[f64]| o.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
    assert!((gg[0] - dot(&outs[1])).abs() < 1e-5 && (gg[1] - dot(&outs[3])).abs() < 1e-5, "{gg:?}");
    mechanics::accumulate_binary_gradient(&alpha, &pair, [gg[0], gg[1]]);
    let grad = Vec::<f64>::try_from(alpha.grad()).unwrap();
    // Central finite differences of the relaxed objective over the pair.
    let f = |a: &[f64]| {
        let p = softmax(&[a[1], a[3]]);
        dot(&outs[1]) * p[0] + dot(&outs[3]) * p[1]
    };
    let h = 1e-5;
    for i in 0..4 {
        let (mut up, mut down) = (l.clone(), l.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (f(&up) - f(&down)) / (2.0 * h);
        assert!((grad[i] - fd).abs() < 1e-6, "alpha[{i}]: Eq. 1 {} vs finite difference {fd}", grad[i]);
    }
    assert_eq!((grad[0], grad[2]), (0.0, 0.0), "unsampled ops get no Eq. 1 gradient");
}

#[test]
fn rescale_keeps_unsampled_probabilities() {
    let (vs, alphas) = arch_vs(&[6], 1);
    let a = &alphas[0];
    tch::no_grad(|| a.shallow_clone().copy_(&Tensor::from_slice(&[0.4f32, -1.0, 0.2, 0.7, -0.3, 0.0])));
    let before = softmax(&mechanics::logits_of(a));
    let pair = Pair { ops: [0, 4], active: 1, probs: [0.5, 0.5] };
    let mut opt = arch_adam(&vs, 0.5);
    opt.zero_grad();
    // An arbitrary gradient on the pair, then the step and the rescale.
    let g = gates(&[pair], Device::Cpu);
    let loss = (a.get(0) * 3.0 - a.get(4) * 2.0).to_kind(Kind::Double);
    finish_arch_step(&alphas, &[pair], &g, &loss, &mut opt);
    let after = softmax(&mechanics::logits_of(a));
    assert!((after[0] - before[0]).abs() > 1e-3, "the step moved the pair: {before:?} -> {after:?}");
    for i in [1, 2, 3, 5] {
        assert!((after[i] - before[i]).abs() < 1e-6, "op {i}: {} -> {}", before[i], after[i]);
    }
    assert!(((after[0] + after[4]) - (before[0] + before[4])).abs() < 1e-6);
    drop(vs);
}

fn costs(edges: &[Vec<f64>]) -> EdgeCosts {
    EdgeCosts { fixed_ms: 2.0, edges: edges.to_vec(), correction: Default::default() }
}

#[test]
fn the_latency_term_alone_drives_every_cell_to_its_cheapest_op() {
    let table = vec![vec![0.9, 0.2, 0.5], vec![0.0, 0.4, 0.8, 0.3, 0.6, 0.7, 1.0], vec![0.3, 0.1, 0.2, 0.6, 0.5, 0.4]];
    let c = costs(&table);
    let (vs, alphas) = arch_vs(&[3, 7, 6], 2);
    let mut opt = arch_adam(&vs, 0.05);
    let mut rng = Rng::new(9);
    for step in 0..300u64 {
        let mut r = Rng::for_item(7, 1, step);
        let pairs = mechanics::sample_pairs(&alphas, &mut r);
        let g = gates(&pairs, Device::Cpu);
        opt.zero_grad();
        // Cross-entropy weight 0: a CE that depends on the gates, but weighted out.
        let ce = g.iter().map(|t| t.sum(Kind::Float) * rng.f64()).fold(Tensor::from(0f32), |a, b| a + b);
        let e = expected_latency(&c, &alphas);
        let loss = arch_loss(&ce, 0.0, LatencyLoss::Add { lambda: 1.0 }, Some(&e), 3.0);
        finish_arch_step(&alphas, &pairs, &g, &loss, &mut opt);
    }
    for (e, (a, cost)) in alphas.iter().zip(&table).enumerate() {
        let p = softmax(&mechanics::logits_of(a));
        let best = p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
        let cheapest = cost.iter().enumerate().min_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
        assert_eq!(best, cheapest, "edge {e}: probabilities {p:?}, costs {cost:?}");
    }
}

/// `steps` architecture steps of the latency term alone (cross-entropy weight 0) under `form`; the expected
/// latency at the end.
fn latency_alone(table: &[Vec<f64>], form: LatencyLoss, target_ms: f64, steps: u64) -> f64 {
    let c = costs(table);
    let sizes: Vec<usize> = table.iter().map(Vec::len).collect();
    let (vs, alphas) = arch_vs(&sizes, 2);
    let mut opt = arch_adam(&vs, 0.05);
    for step in 0..steps {
        let mut r = Rng::for_item(7, 1, step);
        let pairs = mechanics::sample_pairs(&alphas, &mut r);
        let g = gates(&pairs, Device::Cpu);
        opt.zero_grad();
        let ce = g.iter().map(|t| t.sum(Kind::Float)).fold(Tensor::from(0f32), |a, b| a + b);
        let e = expected_latency(&c, &alphas);
        let loss = arch_loss(&ce, 0.0, form, Some(&e), target_ms);
        finish_arch_step(&alphas, &pairs, &g, &loss, &mut opt);
    }
    f64::try_from(expected_latency(&c, &alphas)).unwrap()
}

#[test]
fn the_absolute_latency_term_lands_on_the_target_from_either_side() {
    // Fixed 2.0 ms; the cheapest network is 2.3 ms, the dearest 4.5 ms, uniform probabilities 3.43 ms.
    let table = vec![vec![0.9, 0.2, 0.5], vec![0.0, 0.4, 0.8, 0.3, 0.6, 0.7, 1.0], vec![0.3, 0.1, 0.2, 0.6, 0.5, 0.4]];
    for target in [2.8, 4.0] {
        let e = latency_alone(&table, LatencyLoss::Abs { lambda: 1.0 }, target, 300);
        assert!((e - target).abs() / target < 0.02, "abs form, target {target} ms: expected latency {e} ms");
    }
    // The paper's additive form under the same pull goes on past a target below the start, towards 2.3 ms.
    let e = latency_alone(&table, LatencyLoss::Add { lambda: 1.0 }, 2.8, 300);
    assert!(e < 2.8 * 0.9, "add form, target 2.8 ms: expected latency {e} ms");
}

#[test]
fn binary_gates_find_the_op_a_constructed_loss_favours() {
    // One edge of 7 candidates whose outputs are fixed vectors; the loss is the distance to candidate 4's.
    let mut rng = Rng::new(11);
    let outs: Vec<Tensor> = (0..7).map(|_| Tensor::from_slice(&(0..8).map(|_| rng.normal() as f32).collect::<Vec<_>>())).collect();
    let target = outs[4].shallow_clone();
    let (vs, alphas) = arch_vs(&[7], 3);
    let mut opt = arch_adam(&vs, 0.05);
    for step in 0..400u64 {
        let mut r = Rng::for_item(5, 2, step);
        let pairs = mechanics::sample_pairs(&alphas, &mut r);
        let g = gates(&pairs, Device::Cpu);
        let p = pairs[0];
        let (a, o) = (p.active, 1 - p.active);
        let y = &outs[p.ops[a]] * g[0].get(a as i64) + outs[p.ops[o]].detach() * g[0].get(o as i64);
        opt.zero_grad();
        let loss = (y - &target).square().mean(Kind::Float);
        finish_arch_step(&alphas, &pairs, &g, &loss, &mut opt);
    }
    let p = softmax(&mechanics::logits_of(&alphas[0]));
    let best = p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
    assert_eq!(best, 4, "{p:?}");
    assert!(p[4] > 0.5, "{p:?}");
}

#[test]
fn supernet_runs_one_path_or_two_gated_ops() {
    let arch = strnas::spec::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml")).unwrap();
    let space = Space::around(arch);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SuperNet::new(&vs.root(), &space);
    // Every candidate of every edge has its own variables.
    let names: Vec<String> = vs.variables().into_keys().collect();
    assert!(!names.iter().any(|n| n.starts_with("extractor.cells.1.ops.0")), "identity has no variables");
    assert!(names.iter().any(|n| n.starts_with("extractor.cells.1.ops.6.")), "{:?}", &names[..5]);
    let images = Tensor::rand([2, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let (_avs, alphas) = arch_vs(&space.edges.iter().map(|e| e.candidates.len()).collect::<Vec<_>>(), 4);
    let paths = mechanics::sample_paths(&alphas, &mut Rng::new(1));
    let y = net.forward_t(&images, None, false, &Route::Paths(&paths));
    assert_eq!(y.size(), [2, 26, 38]);
    // The prediction head's input comes out beside the same logits (the auxiliary CTC loss reads it).
    let (f, y2) = net.forward_with_features(&images, None, false, &Route::Paths(&paths));
    assert_eq!(f.size(), [2, 25, 96]);
    assert_eq!((&y - &y2).abs().max().double_value(&[]), 0.0);
    let pairs = mechanics::sample_pairs(&alphas, &mut Rng::new(2));
    let g = gates(&pairs, Device::Cpu);
    let y = net.forward_t(&images, None, true, &Route::Gates(&pairs, &g));
    y.square().mean(Kind::Float).backward();
    for (e, (t, p)) in g.iter().zip(&pairs).enumerate() {
        let gg = t.grad();
        assert!(gg.defined() && gg.isfinite().all().int64_value(&[]) == 1, "edge {e}");
        // The inactive op's weights get no gradient (its output is detached).
        let inactive = format!("{}.ops.{}.", space.edges[e].path, p.ops[1 - p.active]);
        for (n, v) in vs.variables() {
            if n.starts_with(&inactive) && v.requires_grad() {
                let gr = v.grad();
                assert!(!gr.defined() || gr.abs().sum(Kind::Float).double_value(&[]) == 0.0, "{n}");
            }
        }
    }
    // The search's architecture step takes the gradient of the gates and logits only: on a fresh supernet no
    // weight is left with a `.grad`, and the extractor's sampled logits moved.
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SuperNet::new(&vs.root(), &space);
    let (avs, alphas) = arch_vs(&space.edges.iter().map(|e| e.candidates.len()).collect::<Vec<_>>(), 4);
    let before: Vec<Vec<f64>> = alphas.iter().map(mechanics::logits_of).collect();
    let mut opt = arch_adam(&avs, 1e-2);
    let g = gates(&pairs, Device::Cpu);
    let loss = net.forward_t(&images, None, true, &Route::Gates(&pairs, &g)).square().mean(Kind::Float);
    finish_arch_step(&alphas, &pairs, &g, &loss, &mut opt);
    for (n, v) in vs.variables() {
        assert!(!v.grad().defined(), "{n} has a gradient after an architecture step");
    }
    // (The rectifier's gates get no gradient at the identity initialisation: its last layer is zero.)
    for (e, (a, b)) in alphas.iter().zip(&before).enumerate() {
        if space.edges[e].path.starts_with("extractor") && pairs[e].ops[0] != pairs[e].ops[1] {
            assert_ne!(&mechanics::logits_of(a), b, "{}", space.edges[e].path);
        }
    }
}

#[test]
fn zero_gamma_initialisation_reaches_every_candidate_of_a_residual_cell() {
    // `--zero-init-residual` on a supernet: every MBConv candidate of a stride-1, channel-keeping cell starts as
    // the identity, so whichever path a weight step samples starts like the fixed network would.
    let arch = strnas::spec::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml")).unwrap();
    let space = Space::around(arch);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = SuperNet::new(&vs.root(), &space);
    let set = strnas::nn::zero_init_residual(&vs, &space.base);
    let vars = vs.variables();
    let mut want = 0;
    for e in &space.edges {
        let residual = e.cell.stride == [1, 1] && e.cell.input.c == e.cell.output.c;
        for i in 0..e.candidates.len() {
            let Some(g) = vars.get(&format!("{}.ops.{i}.project.bn.weight", e.path)) else { continue };
            let zero = g.abs().sum(Kind::Float).double_value(&[]) == 0.0;
            assert_eq!(zero, residual, "{}.ops.{i}", e.path);
            want += usize::from(residual);
        }
    }
    assert!(want > 50, "{want}");
    // Fixed cells outside the searched edges (none here besides stems and heads, which are not residual).
    assert_eq!(set, want);
}

fn probs_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("probs.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `strnas search` end to end on the CRNN space (extractor cells searched, no latency term): resume after a
/// stop reproduces the uninterrupted run's probabilities at every architecture step, and the searched spec
/// validates.
#[test]
fn search_resumes_to_the_same_probabilities_and_writes_a_valid_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("train");
    let valid = tmp.path().join("valid");
    make_synth(&data, 60, 1);
    make_synth(&valid, 8, 2);
    let space = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny/tiny-crnn-ctc.yaml");
    let run = |out: &std::path::Path, iters: &str, extra: &[&str]| {
        let mut args = vec![
            "search", space.to_str().unwrap(), "--train-data", data.to_str().unwrap(), "--valid-data", valid.to_str().unwrap(),
            "--preset", "str-nas2", "--search", "extractor", "--iters", iters, "--batch-size", "4", "--warmup-iters", "2",
            "--arch-every", "2", "--valid-every", "6", "--arch-lr", "0.05", "--threads", "1", "--lr-schedule", "constant", "--log-every", "4", "--out", out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = common::strnas(&args);
        assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        o
    };
    let whole = tmp.path().join("whole");
    let o = run(&whole, "12", &["--min-odds", "1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("5 architecture steps"), "{}", String::from_utf8_lossy(&o.stdout));
    let split = tmp.path().join("split");
    run(&split, "6", &["--min-odds", "1"]);
    // A second start without --resume is refused: the run directory holds a search.
    let mut args_again = vec!["search", space.to_str().unwrap(), "--train-data", data.to_str().unwrap(), "--preset", "str-nas2", "--out", split.to_str().unwrap()];
    args_again.extend(["--iters", "6"]);
    assert_eq!(common::strnas(&args_again).status.code(), Some(2));
    // --min-odds selects the result from the logits: a resumed run may change it.
    run(&split, "12", &["--resume"]);
    let (a, b) = (probs_lines(&whole), probs_lines(&split));
    assert_eq!(a.len(), 5);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let (px, py) = (x["probs"].as_array().unwrap(), y["probs"].as_array().unwrap());
        for (ex, ey) in px.iter().zip(py) {
            for (u, v) in ex.as_array().unwrap().iter().zip(ey.as_array().unwrap()) {
                let (u, v) = (u.as_f64().unwrap(), v.as_f64().unwrap());
                assert!((u - v).abs() < 1e-6, "arch step {}: {u} vs {v}", x["arch_step"]);
            }
        }
    }
    // The probabilities moved, and the searched spec is a valid spec of the same skeleton.
    let last = a.last().unwrap()["probs"].as_array().unwrap().iter().flat_map(|e| e.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>()).collect::<Vec<_>>();
    assert!(last.iter().any(|p| (p - 1.0 / 7.0).abs() > 1e-3 && (p - 1.0 / 6.0).abs() > 1e-3 && (p - 1.0 / 3.0).abs() > 1e-3), "{last:?}");
    let searched = strnas::spec::load(&whole.join("arch.yaml")).unwrap();
    let space_spec = strnas::spec::load(&space).unwrap().spec;
    assert_eq!(strnas::latency::skeleton_hash(&searched.spec), strnas::latency::skeleton_hash(&space_spec));
    // With --min-odds 1 arch.yaml is the plain argmax of the last probabilities.
    let done: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("done.json")).unwrap()).unwrap();
    let mut sp = strnas::latency::Space::around(strnas::spec::load(&space).unwrap());
    sp.restrict(&[strnas::ops::Part::Extractor]);
    let own = sp.choice_of(&sp.base).unwrap();
    let argmax_changes = a.last().unwrap()["probs"].as_array().unwrap().iter().zip(&own).filter(|(e, &i)| {
        let p: Vec<f64> = e.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        p.iter().cloned().fold(0.0, f64::max) > p[i]
    });
    assert_eq!(done["changed_cells"].as_u64().unwrap() as usize, argmax_changes.count());
    assert!(done["changed_cells"].as_u64().unwrap() > 0, "{done}");
    // Odds no 12-step search reaches: every cell keeps the space spec's op, the table and done.json say so.
    let strict = tmp.path().join("strict");
    let o = run(&strict, "12", &["--min-odds", "1000"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("0 of {} cells changed from the space spec", own.len())), "{}", String::from_utf8_lossy(&o.stdout));
    let kept = strnas::spec::load(&strict.join("arch.yaml")).unwrap().spec;
    assert_eq!(kept.extractor, space_spec.extractor);
    let done: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(strict.join("done.json")).unwrap()).unwrap();
    assert_eq!(done["changed_cells"], 0);
    for f in ["supernet.safetensors", "metrics.jsonl", "log.txt", "config.json"] {
        assert!(whole.join(f).exists(), "{f}");
    }
    // The searched network's inherited weights belong to arch.yaml (hash, names, shapes): what
    // `strnas train arch.yaml --init-from arch.safetensors` fine-tunes.
    strnas::weights::WeightFile::read(&whole.join("arch.safetensors")).unwrap().check_against(&searched).unwrap();
    // `--log-every 4`: progress lines at 4 and 8 (12 is a validation line, which says more).
    let log = std::fs::read_to_string(whole.join("log.txt")).unwrap();
    assert!(log.contains("[4/12] loss ") && log.contains("[8/12] loss ") && log.contains(" s/iter, eta "), "{log}");
    assert_eq!(log.matches("[12/12]").count(), 1, "{log}");
    // The paper's Fig. 3 and the curves, from the run directory.
    let charts = tmp.path().join("charts");
    let o = common::strnas(&["report", "--search", whole.to_str().unwrap(), "--out", charts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["search-probs-heatmap.svg", "search-probs-heatmap.png", "search-probs-curves.svg"] {
        assert!(charts.join(f).exists(), "{f}");
    }
    let svg = std::fs::read_to_string(charts.join("search-probs-heatmap.svg")).unwrap();
    assert!(svg.contains("extractor.cells.0") && svg.contains("identity") && svg.contains("mb7x7-e6"));
}

/// `--aux-ctc` (a recipe flag shared with `strnas train`) reaches the search's weight steps and its
/// architecture steps: the supernet of a TPS + attention space trains with the auxiliary head, which lives in
/// the search checkpoint only, and the architecture steps minimise the same objective; the searched spec is a
/// plain spec. A CTC space refuses it.
#[test]
fn search_weight_steps_take_the_auxiliary_ctc_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("train");
    make_synth(&data, 20, 3);
    let specs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny");
    let out = tmp.path().join("run");
    let args_with = |space: &str, out: &std::path::Path, aux: &str| {
        let space = specs.join(space).to_str().unwrap().to_string();
        let v: Vec<String> = [
            "search", &space, "--train-data", data.to_str().unwrap(), "--preset", "str-nas2", "--search", "extractor",
            "--iters", "4", "--batch-size", "2", "--warmup-iters", "2", "--arch-every", "1", "--threads", "1",
            "--optimizer", "adam", "--aux-ctc", aux, "--out", out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v
    };
    let args = |space: &str, out: &std::path::Path| args_with(space, out, "1");
    let a = args("tiny-limited-3x3-ex3-attn.yaml", &out);
    let o = common::strnas(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let ckpt = strnas::weights::WeightFile::read(&out.join("supernet.safetensors")).unwrap();
    assert!(ckpt.tensors.contains_key("training.aux_ctc.weight"), "{:?}", ckpt.tensors.keys().filter(|k| k.starts_with("training")).collect::<Vec<_>>());
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["aux_ctc"], 1.0);
    strnas::spec::load(&out.join("arch.yaml")).unwrap();
    // The architecture steps minimise the same objective: attention CE + 1 x CTC. A CTC loss at initialisation
    // is several nats per character, so the first architecture step's objective lies well above that of the
    // same search without the auxiliary loss (attention CE alone, ~ln 38).
    let first_objective = |run: &std::path::Path| -> (f64, f64) {
        let text = std::fs::read_to_string(run.join("probs.jsonl")).unwrap();
        let rec: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        (rec["objective"].as_f64().unwrap(), rec["loss"].as_f64().unwrap())
    };
    let plain = tmp.path().join("plain");
    let a = args_with("tiny-limited-3x3-ex3-attn.yaml", &plain, "0");
    let o = common::strnas(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let ((with_aux, loss), (without, _)) = (first_objective(&out), first_objective(&plain));
    assert!(with_aux > without + 1.0, "architecture objective with --aux-ctc 1: {with_aux}, without: {without}");
    assert_eq!(loss, with_aux, "str-nas2 has no latency term: the architecture loss is the objective");
    let a = args("tiny-crnn-ctc.yaml", &tmp.path().join("ctc"));
    let o = common::strnas(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--aux-ctc is for attention models"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `strnas search --init-from`: after the warm start, every path of the supernet that takes no identity
/// computes what the fixed network whose weights were given does (fixed blocks and the spec's own candidates
/// copied by name, larger kernels and expansions by a function-preserving transfer); weights of another
/// network are refused with the file named.
#[test]
fn warm_start_makes_every_path_compute_the_trained_network() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let arch = strnas::spec::load(&root.join("arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml")).unwrap();
    let space = Space::around(arch.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fixed.safetensors");
    tch::manual_seed(5);
    let fvs = nn::VarStore::new(Device::Cpu);
    let fixed = strnas::nn::StrNet::new(&fvs.root(), &arch);
    // Non-trivial BatchNorm statistics and scales, as a trained network has.
    for (n, mut v) in fvs.variables() {
        if n.contains(".bn.") {
            tch::no_grad(|| v.copy_(&(Tensor::rand_like(&v) + 0.5)));
        }
    }
    strnas::nn::weights::save_weights(&fvs, &arch, &file, &[]).unwrap();

    tch::manual_seed(6);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SuperNet::new(&vs.root(), &space);
    let (copied, transferred) = strnas::search::run::warm_start(&vs, &space, &file).unwrap();
    assert_eq!(copied + transferred, vs.variables().len());
    assert!(copied >= fvs.variables().len() && transferred > 0, "{copied} {transferred}");
    let images = Tensor::rand([2, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let want = fixed.forward_t(&images, None, false);
    let (_avs, alphas) = arch_vs(&space.edges.iter().map(|e| e.candidates.len()).collect::<Vec<_>>(), 9);
    for seed in 0..4 {
        // A random path, identity replaced by the next candidate (identity skips the cell: another network).
        let paths: Vec<usize> = mechanics::sample_paths(&alphas, &mut Rng::new(seed))
            .into_iter()
            .zip(&space.edges)
            .map(|(p, e)| if e.candidates[p].to_string() == "identity" { p + 1 } else { p })
            .collect();
        let got = net.forward_t(&images, None, false, &Route::Paths(&paths));
        let diff = (&want - &got).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "path {seed}: {diff}");
    }
    // The transfer itself, on a hand-sized case: a 1x1x3x3 kernel into 2x1x5x5, and a 1x2 projection read
    // by 4 repeated channels.
    let k: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let big = strnas::search::run::transfer(&k, &[1, 1, 3, 3], &[2, 1, 5, 5]);
    assert_eq!((big[0], big[6], big[12], big[18], big[25 + 12]), (0.0, 1.0, 5.0, 9.0, 5.0));
    assert_eq!(strnas::search::run::transfer(&[2.0, 4.0], &[1, 2, 1, 1], &[1, 4, 1, 1]), vec![1.0, 2.0, 1.0, 2.0]);

    // Weights of a different network: refused, naming the file.
    let crnn = strnas::spec::load(&root.join("arch_specs/tiny/tiny-crnn-ctc.yaml")).unwrap();
    let cvs = nn::VarStore::new(Device::Cpu);
    let _c = strnas::nn::StrNet::new(&cvs.root(), &crnn);
    let wrong = dir.path().join("crnn.safetensors");
    strnas::nn::weights::save_weights(&cvs, &crnn, &wrong, &[]).unwrap();
    let err = format!("{:#}", strnas::search::run::warm_start(&vs, &space, &wrong).unwrap_err());
    assert!(err.contains("--init-from") && err.contains("crnn.safetensors"), "{err}");
}
