//! The one-shot search's parts and the protocol's tools: BatchNorm recalibration of an inherited path, the
//! 'two'-mode expected latency, `strnas search --strategy evolution` end to end (hard limit, resume of both
//! phases), `strnas sample` and `strnas rank`.
#![cfg(feature = "torch")]

mod common;
use common::{constructed_table, make_synth, strnas, text, tiny_spec_path};

use std::path::Path;

use strnas::latency::Space;
use strnas::rng::Rng;
use strnas::search::inherit::{inherit, recalibrate_bn};
use strnas::search::mechanics;
use strnas::search::supernet::SuperNet;
use tch::{nn, Device, Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The fixed network of `choice` with weights inherited from a randomly initialised supernet whose BatchNorm
/// statistics are perturbed (as a supernet's shared statistics are: they belong to no single path).
fn inherited_net(space: &Space, choice: &[usize]) -> (nn::VarStore, strnas::nn::StrNet) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = SuperNet::new(&vs.root(), space);
    for (n, mut v) in vs.variables() {
        if n.ends_with("running_mean") || n.ends_with("running_var") || n.ends_with("bn.weight") {
            tch::no_grad(|| v.copy_(&(Tensor::rand_like(&v) * 2.0 + 0.2)));
        }
    }
    let ops = space.ops_at(choice);
    let arch = space.with_ops(&ops, "inherited").unwrap();
    let wf = inherit(&vs, space, &ops, &arch).unwrap();
    let mut fvs = nn::VarStore::new(Device::Cpu);
    let net = strnas::nn::StrNet::new(&fvs.root(), &arch);
    strnas::nn::weights::load_model(&mut fvs, &arch, &wf, Path::new("supernet")).unwrap();
    (fvs, net)
}

fn stats_of(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn bn_recalibration_changes_running_statistics_only_and_brings_eval_mode_to_train_mode() {
    let space = Space::around(strnas::spec::load(&tiny_spec_path("tiny-limited-3x3-ex3-ctc.yaml")).unwrap());
    let choice: Vec<usize> = {
        let mut rng = Rng::new(4);
        strnas::latency::sample::uniform_choice(&space, &mut rng)
    };
    let (vs, net) = inherited_net(&space, &choice);
    tch::manual_seed(9);
    let x1 = Tensor::rand([16, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let x2 = Tensor::rand([16, 1, 32, 100], (Kind::Float, Device::Cpu)) * 1.5 - 0.5;
    let gap = |x: &Tensor| tch::no_grad(|| max_diff(&net.forward_t(x, None, false), &net.forward_t(x, None, true)));
    // (The train-mode forward above updates running statistics: measure the gap on copies of the state.)
    let before_state = stats_of(&vs);
    let before = gap(&x1);
    restore(&vs, &before_state);

    let forward = |x: &Tensor| {
        let _ = net.forward_t(x, None, true);
    };
    let n = recalibrate_bn(&vs, std::slice::from_ref(&x1), forward);
    assert!(n >= 10, "{n} BatchNorms recalibrated");
    let after_state = stats_of(&vs);
    for ((name, a), (_, b)) in before_state.iter().zip(&after_state) {
        let changed = max_diff(a, b) > 0.0;
        let is_stat = name.ends_with("running_mean") || name.ends_with("running_var");
        assert!(!changed || is_stat, "{name} changed: recalibration must touch running statistics only");
        if name.ends_with("running_var") {
            assert!(changed, "{name} was not recalibrated");
        }
    }
    let after = gap(&x1);
    restore(&vs, &after_state);
    assert!(after < before / 10.0, "eval vs train mode on the recalibration batch: {before} before, {after} after");

    // Two batches: the plain mean of each batch's statistics (not a momentum average).
    let single = |x: &Tensor| {
        restore(&vs, &before_state);
        recalibrate_bn(&vs, std::slice::from_ref(x), forward);
        stats_of(&vs)
    };
    let (s1, s2) = (single(&x1), single(&x2));
    restore(&vs, &before_state);
    recalibrate_bn(&vs, &[x1.shallow_clone(), x2.shallow_clone()], forward);
    for (((name, both), (_, a)), (_, b)) in stats_of(&vs).iter().zip(&s1).zip(&s2) {
        if name.contains("running_") {
            let mean = (a + b) / 2.0;
            assert!(max_diff(both, &mean) < 1e-4 * (1.0 + mean.abs().max().double_value(&[])), "{name}");
        }
    }
}

fn restore(vs: &nn::VarStore, state: &[(String, Tensor)]) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (n, t) in state {
            vars[n].shallow_clone().copy_(t);
        }
    });
}

#[test]
fn two_mode_expected_latency_uses_the_pairs_renormalised_probabilities() {
    let costs = strnas::latency::EdgeCosts { fixed_ms: 1.0, edges: vec![vec![1.0, 2.0, 4.0], vec![3.0, 5.0]], correction: Default::default() };
    let alphas = [Tensor::from_slice(&[0.1f64, 0.5, -0.3]).set_requires_grad(true), Tensor::from_slice(&[0.2f64, -0.1]).set_requires_grad(true)];
    let pairs = [mechanics::Pair { ops: [2, 0], active: 0, probs: [0.0, 0.0] }, mechanics::Pair { ops: [1, 0], active: 1, probs: [0.0, 0.0] }];
    let e = mechanics::expected_latency_of_pairs(&costs, &alphas, &pairs);
    // Edge 0: softmax over logits (-0.3, 0.1) of ops 2 and 0; edge 1: softmax over (-0.1, 0.2) of ops 1 and 0.
    let p = |a: f64, b: f64| (a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp()));
    let (p2, p0) = p(-0.3, 0.1);
    let (q1, q0) = p(-0.1, 0.2);
    let want = 1.0 + (p2 * 4.0 + p0 * 1.0) + (q1 * 5.0 + q0 * 3.0);
    assert!((e.double_value(&[]) - want).abs() < 1e-12, "{} vs {want}", e.double_value(&[]));
    e.backward();
    let g0 = Vec::<f64>::try_from(alphas[0].grad()).unwrap();
    assert_eq!(g0[1], 0.0, "the unsampled op's logit gets no latency gradient");
    // d/d a2 of (p2 c2 + p0 c0) = p2 p0 (c2 - c0).
    assert!((g0[2] - p2 * p0 * 3.0).abs() < 1e-12 && (g0[0] + p2 * p0 * 3.0).abs() < 1e-12, "{g0:?}");
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `strnas search --strategy evolution` on the tiny TPS + CTC space with a constructed latency table: no
/// candidate above the limit is ever scored or returned; a run split in the weight phase and another cut in
/// the evolution phase both resume to the uninterrupted run's candidates, fitness and searched spec. Then
/// `strnas sample` draws specs in a band and `strnas rank` scores them in the trained supernet.
#[test]
fn evolution_search_keeps_the_limit_and_resumes_both_phases_then_sample_and_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, valid) = (tmp.path().join("train"), tmp.path().join("valid"));
    make_synth(&data, 40, 1);
    make_synth(&valid, 8, 2);
    let space_spec = tiny_spec_path("tiny-limited-3x3-ex3-ctc.yaml");
    let space = Space::around(strnas::spec::load(&space_spec).unwrap());
    let table = constructed_table(&space);
    let table_path = tmp.path().join("table.json");
    table.write(&table_path).unwrap();
    let costs = table.edge_costs(&space).unwrap();
    let skeleton_ms = table.predict(&space.base).unwrap().total_ms;
    let limit = skeleton_ms * 1.1;
    let limit_s = format!("{limit}");
    let run = |out: &Path, iters: &str, resume: bool| {
        let mut args = vec![
            "search", space_spec.to_str().unwrap(), "--strategy", "evolution", "--train-data", data.to_str().unwrap(),
            "--valid-data", valid.to_str().unwrap(), "--latency-table", table_path.to_str().unwrap(), "--target-ms", &limit_s,
            "--iters", iters, "--batch-size", "4", "--valid-every", "3", "--population", "5", "--generations", "2",
            "--recal-images", "8", "--threads", "1", "--optimizer", "adam", "--lr-schedule", "constant", "--out", out.to_str().unwrap(),
        ];
        if resume {
            args.push("--resume");
        }
        let o = strnas(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        o
    };
    let whole = tmp.path().join("whole");
    let o = run(&whole, "6", false);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fittest") && out.contains("space spec"), "{out}");
    let scored = lines(&whole.join("evolution.jsonl"));
    assert!(scored.len() >= 5, "{}", scored.len());
    for c in &scored {
        let ms = c["latency_ms"].as_f64().unwrap();
        assert!(ms <= limit, "scored above the limit: {c}");
        let choice: Vec<usize> = serde_json::from_value(c["choice"].clone()).unwrap();
        assert!((strnas::latency::sample::predicted_ms(&costs, &choice) - ms).abs() < 1e-9);
    }
    // The space spec seeds the population: the first candidate scored.
    assert_eq!(serde_json::from_value::<Vec<usize>>(scored[0]["choice"].clone()).unwrap(), space.choice_of(&space.base).unwrap());
    let searched = strnas::spec::load(&whole.join("arch.yaml")).unwrap();
    assert!(table.predict(&searched).unwrap().total_ms <= limit + 1e-9);
    // done.json counts the cells where the fittest differs from the space spec.
    let (a, b) = (space.choice_of(&searched).unwrap(), space.choice_of(&space.base).unwrap());
    let done: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("done.json")).unwrap()).unwrap();
    assert_eq!(done["changed_cells"].as_u64(), Some(a.iter().zip(&b).filter(|(x, y)| x != y).count() as u64), "{done}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("evolution.json")).unwrap()).unwrap();
    let best = summary["best"]["fitness"].as_f64().unwrap();
    assert!(scored.iter().all(|c| c["fitness"].as_f64().unwrap() <= best));
    let pareto: Vec<_> = std::fs::read_dir(whole.join("pareto")).unwrap().collect();
    assert_eq!(pareto.len(), summary["pareto"].as_array().unwrap().len());

    // A search of 3 weight steps resumed for 6: the first evolution (scored on the 3-step supernet) is moved
    // aside, and the result is the uninterrupted run's.
    let split = tmp.path().join("split");
    run(&split, "3", false);
    run(&split, "6", true);
    assert!(split.join("evolution.before-6.jsonl").exists());
    assert_eq!(lines(&split.join("evolution.jsonl")), scored);

    // Its chart: inherited accuracy against predicted latency.
    let charts = tmp.path().join("charts");
    let o = strnas(&["report", "--search", whole.to_str().unwrap(), "--out", charts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(charts.join("search-evolution.svg").exists() && charts.join("search-evolution.png").exists(), "{}", text(&o));

    // Evolution phase cut after 3 candidates: resumed, it scores only the rest and reaches the same result.
    let cut = tmp.path().join("cut");
    copy_dir(&whole, &cut);
    let kept: Vec<String> = std::fs::read_to_string(whole.join("evolution.jsonl")).unwrap().lines().take(3).map(String::from).collect();
    std::fs::write(cut.join("evolution.jsonl"), kept.join("\n") + "\n").unwrap();
    for f in ["arch.yaml", "evolution.json"] {
        std::fs::remove_file(cut.join(f)).unwrap();
    }
    std::fs::remove_dir_all(cut.join("pareto")).unwrap();
    let o = run(&cut, "6", true);
    assert!(std::fs::read_to_string(cut.join("log.txt")).unwrap().contains("3 candidates already scored"), "{}", text(&o));
    assert_eq!(lines(&cut.join("evolution.jsonl")), scored);
    assert_eq!(std::fs::read_to_string(cut.join("arch.yaml")).unwrap(), std::fs::read_to_string(whole.join("arch.yaml")).unwrap());

    // `strnas sample`: 3 distinct specs in a +-20% band around the skeleton.
    let random = tmp.path().join("random");
    let o = strnas(&["sample", space_spec.to_str().unwrap(), "--latency-table", table_path.to_str().unwrap(), "--band", "20%", "--count", "3", "--seed", "2", "-o", random.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let specs: Vec<_> = strnas::spec::expand_paths(std::slice::from_ref(&random)).unwrap();
    assert_eq!(specs.len(), 3);
    let mut choices = vec![];
    for p in &specs {
        let a = strnas::spec::load(p).unwrap();
        let ms = table.predict(&a).unwrap().total_ms;
        assert!((ms / skeleton_ms - 1.0).abs() <= 0.2 + 1e-9, "{} predicted {ms} vs {skeleton_ms}", a.name);
        choices.push(space.choice_of(&a).unwrap());
    }
    assert_eq!(choices.iter().collect::<std::collections::HashSet<_>>().len(), 3);
    // An impossible band is refused, naming the flag to change.
    let o = strnas(&["sample", space_spec.to_str().unwrap(), "--latency-table", table_path.to_str().unwrap(), "--target-ms", "0.01", "--count", "2", "--max-draws", "1000", "-o", tmp.path().join("none").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("only 0 distinct architectures") && text(&o).contains("--band"), "{}", text(&o));

    // `strnas rank`: the sampled specs and the skeleton in the trained supernet, against hand-written
    // stand-alone results; the correlation printed is that of the inherited accuracies in the JSON.
    let mut stand = vec![];
    for (i, p) in specs.iter().chain(std::iter::once(&space_spec)).enumerate() {
        let name = strnas::spec::load(p).unwrap().name;
        let f = tmp.path().join(format!("eval{i}.json"));
        std::fs::write(&f, serde_json::json!({ "model": name, "datasets": [], "total": { "name": "total", "accuracy": 10.0 * i as f64 } }).to_string()).unwrap();
        stand.push(f.to_str().unwrap().to_string());
    }
    // A second seed of each: 0, 20, 10, 30 against the first seed's 0, 10, 20, 30 (one discordant pair of 6).
    for (i, p) in specs.iter().chain(std::iter::once(&space_spec)).enumerate() {
        let name = strnas::spec::load(p).unwrap().name;
        let f = tmp.path().join(format!("eval{i}-seed2.json"));
        let acc = [0.0, 20.0, 10.0, 30.0][i];
        std::fs::write(&f, serde_json::json!({ "model": name, "datasets": [], "total": { "name": "total", "accuracy": acc } }).to_string()).unwrap();
        stand.push(f.to_str().unwrap().to_string());
    }
    let rank_json = tmp.path().join("rank.json");
    let inherited = tmp.path().join("inherited");
    let mut args = vec!["rank", whole.to_str().unwrap(), random.to_str().unwrap(), space_spec.to_str().unwrap(), "--train-data", data.to_str().unwrap(), "--data", valid.to_str().unwrap(), "--recal-images", "8", "--batch-size", "4", "--json", rank_json.to_str().unwrap(), "--weights-out", inherited.to_str().unwrap(), "--stand-alone"];
    args.extend(stand.iter().map(String::as_str));
    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rank_json).unwrap()).unwrap();
    let rows = doc["specs"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let x: Vec<f64> = rows.iter().map(|r| r["inherited_accuracy"].as_f64().unwrap()).collect();
    let y: Vec<f64> = rows.iter().map(|r| r["stand_alone_accuracy"].as_f64().unwrap()).collect();
    // The skeleton's inherited accuracy is the fitness the evolution gave it.
    let skeleton_fitness = scored[0]["fitness"].as_f64().unwrap();
    assert!((x[3] - skeleton_fitness).abs() < 1e-9, "{} vs {skeleton_fitness}", x[3]);
    assert_eq!(y, [0.0, 15.0, 15.0, 30.0], "the mean of both seeds");
    // --weights-out: each spec's inherited, recalibrated weights, named after it; the skeleton's, evaluated as a
    // fixed network of its spec, score what the supernet scored for it.
    for p in specs.iter().chain(std::iter::once(&space_spec)) {
        let name = strnas::spec::load(p).unwrap().name;
        assert!(inherited.join(format!("{name}.safetensors")).is_file(), "{name}");
    }
    let skeleton_name = strnas::spec::load(&space_spec).unwrap().name;
    let eval_json = tmp.path().join("inherited-eval.json");
    let w = inherited.join(format!("{skeleton_name}.safetensors"));
    let ev = strnas(&["eval", space_spec.to_str().unwrap(), "--weights", w.to_str().unwrap(), "--data", valid.to_str().unwrap(), "--batch-size", "4", "--no-timing", "--json", eval_json.to_str().unwrap()]);
    assert_eq!(ev.status.code(), Some(0), "{}", text(&ev));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eval_json).unwrap()).unwrap();
    assert!((e["total"]["norm_ed"].as_f64().unwrap() - rows[3]["inherited_norm_ed"].as_f64().unwrap()).abs() < 1e-9, "{e} vs {}", rows[3]);
    assert!((e["total"]["accuracy"].as_f64().unwrap() - x[3]).abs() < 1e-9, "{e} vs {}", rows[3]);
    // Kendall tau of seed 1 against seed 2: (5 - 1) / 6.
    assert!((doc["stand_alone_repeatability"]["kendall_tau"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-12, "{doc}");
    assert!(text(&o).contains("stand-alone repeatability"), "{}", text(&o));
    match strnas::eval::rank::correlation(&x, &y) {
        Some(c) => assert_eq!(doc["correlation"]["kendall_tau"].as_f64().unwrap(), c.kendall_tau),
        None => assert!(doc["correlation"].is_null() && text(&o).contains("undefined")),
    }
    // A spec of another space is refused, naming it.
    let o = strnas(&["rank", whole.to_str().unwrap(), tiny_spec_path("tiny-crnn-ctc.yaml").to_str().unwrap(), "--train-data", data.to_str().unwrap(), "--data", valid.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("tiny-crnn-ctc") && text(&o).contains("not a spec of the run's space"), "{}", text(&o));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
