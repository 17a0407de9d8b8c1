//! `strnas bench` and `strnas report`: real onnxruntime and tract sessions on tiny budgets; foreign ONNX
//! models (Constant weights, two inputs, dynamic dims); per-model errors; the latency gate end to end.

mod common;
use common::{root, strnas, text};

use std::path::{Path, PathBuf};

use serde_json::Value;
use strnas_onnx::{Attr, Dim, Elem, GraphBuilder};

const FAST: &[&str] = &["--warmup", "2", "--min-iters", "5", "--min-time", "0.05", "--threads", "1"];

fn bench(args: &[&str]) -> std::process::Output {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(FAST);
    strnas(&all)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A model as other exporters write them: weights in a Constant node, two inputs, dynamic height and width.
/// x [N,3,H,W] -> Conv 3x3 (8 filters, pad 1) -> GlobalAveragePool -> Flatten -> + y [N,8].
fn foreign_model(dir: &Path) -> PathBuf {
    let mut g = GraphBuilder::new("foreign");
    let n = Dim::Param("N".into());
    g.input("x", Elem::F32, &[n.clone(), Dim::Fixed(3), Dim::Param("H".into()), Dim::Param("W".into())]).unwrap();
    g.input("y", Elem::F32, &[n.clone(), Dim::Fixed(8)]).unwrap();
    let w: Vec<f32> = (0..8 * 3 * 3 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    g.constant_f32("w", &[8, 3, 3, 3], &w).unwrap();
    g.node("Conv", "conv", &["x", "w"], &["c"], &[("kernel_shape", Attr::Ints(vec![3, 3])), ("pads", Attr::Ints(vec![1, 1, 1, 1]))]).unwrap();
    g.node("GlobalAveragePool", "gap", &["c"], &["p"], &[]).unwrap();
    g.node("Flatten", "flat", &["p"], &["f"], &[]).unwrap();
    g.node("Add", "add", &["f", "y"], &["out"], &[]).unwrap();
    g.output("out", Elem::F32, &[n, Dim::Fixed(8)]).unwrap();
    let p = dir.join("foreign.onnx");
    std::fs::write(&p, strnas_onnx::to_bytes(&g.finish("test", &[])).unwrap()).unwrap();
    p
}

#[test]
fn specs_bench_on_both_runtimes_with_full_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let md = dir.path().join("b.md");
    let o = bench(&[
        "arch_specs/tiny/tiny-crnn-ctc.yaml",
        "--runtime",
        "ort,tract",
        "--batch",
        "1,2",
        "--json",
        out.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("ort ms/img b1") && t.contains("tract ms/img b2") && t.contains("params x10^6"), "{t}");
    let r = json(&out);
    assert_eq!(r["format"], "strnas-bench");
    let m = &r["models"][0];
    // The paper's params column is the spec count (BatchNorm included, before folding).
    let arch = strnas::spec::load(&root().join("arch_specs/tiny/tiny-crnn-ctc.yaml")).unwrap();
    let s = strnas::ops::summarize(&strnas::ops::inventory(&arch));
    assert_eq!((m["params"].as_u64(), m["flops"].as_u64(), m["params_source"].as_str()), (Some(s.params), Some(s.flops), Some("spec")));
    assert!(m["ops"].as_u64().unwrap() > 30 && m["op_counts"]["LSTM"] == 2, "{m}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for x in results {
        let st = &x["stats"];
        let f = |k: &str| st[k].as_f64().unwrap();
        assert!(st["runs"].as_u64().unwrap() >= 5, "{x}");
        assert!(f("min_ms") > 0.0 && f("min_ms") <= f("median_ms") && f("median_ms") <= f("p90_ms") && f("p90_ms") <= f("p99_ms") && f("p99_ms") <= f("max_ms"), "{x}");
        let batch = x["batch"].as_f64().unwrap();
        assert!((x["ms_per_image"].as_f64().unwrap() - f("median_ms") / batch).abs() < 1e-9);
        assert!((x["images_per_s"].as_f64().unwrap() * x["ms_per_image"].as_f64().unwrap() - 1e3).abs() < 1e-6);
        assert!(x["gflops_per_s"].as_f64().unwrap() > 0.0);
    }
    // The machine's GEMM peak is measured on the bench's threads and printed as the reference of "% peak".
    let p = &r["peak"];
    assert_eq!((p["n"].as_u64(), p["threads"].as_u64()), (Some(1024), r["settings"]["threads"].as_u64()), "{p}");
    assert!(p["median_gflops"].as_f64().unwrap() > 0.0 && p["best_gflops"].as_f64().unwrap() >= p["median_gflops"].as_f64().unwrap(), "{p}");
    assert!(p["workload"].as_str().unwrap().contains("onnxruntime 1.31.1 MatMul"), "{p}");
    assert!(t.contains("% peak") && t.contains("machine's GEMM peak"), "{t}");
    let engines: Vec<&str> = r["engines"].as_array().unwrap().iter().map(|e| e["version"].as_str().unwrap()).collect();
    // The tract version reported is the one Cargo.lock resolves (the constant cannot drift from the dependency).
    let lock = std::fs::read_to_string(common::root().join("Cargo.lock")).unwrap();
    let locked = lock.split("[[package]]").find(|p| p.contains("name = \"tract-onnx\"")).and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \""))).map(|v| v.trim_end_matches('"')).unwrap();
    assert!(engines.contains(&"1.31.1") && engines.contains(&locked), "{engines:?}, Cargo.lock: tract-onnx {locked}");
    assert!(r["machine"]["logical_cpus"].as_u64().unwrap() >= 1);
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| model |") && md.contains("---:"), "{md}");
}

#[test]
fn models_are_timed_against_a_reference_model_in_alternating_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let reference = "arch_specs/tiny/tiny-crnn-ctc.yaml";
    let o = bench(&[reference, "arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml", "--runtime", "ort", "--batch", "1", "--relative-to", reference, "--rounds", "3", "--json", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("ort b1 x tiny-crnn-ctc") && t.contains("1 (ref)"), "{t}");
    let r = json(&out);
    let results = r["results"].as_array().unwrap();
    let of = |name: &str| results.iter().find(|x| x["model"] == name).unwrap();
    assert!(of("tiny-crnn-ctc").get("relative").is_none(), "the reference is not timed against itself");
    let rel = &of("tiny-limited-3x3-ex3-ctc")["relative"];
    assert_eq!(rel["model"], "tiny-crnn-ctc");
    let ab = &rel["ab"];
    let ratios: Vec<f64> = ab["ratios"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!((ab["rounds"].as_u64(), ratios.len()), (Some(3), 3), "{ab}");
    assert!(ratios.iter().all(|x| x.is_finite() && *x > 0.0), "{ab}");
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(ab["ratio"].as_f64(), Some(sorted[1]), "the ratio is the median over rounds: {ab}");

    // A reference that does not load: an error naming the flag and the file, exit 2, the rest still measured.
    let o = bench(&[reference, "--runtime", "ort", "--batch", "1", "--relative-to", "no/such.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("--relative-to") && t.contains("no/such.yaml") && t.contains("tiny-crnn-ctc"), "{t}");
}

#[test]
fn any_onnx_model_with_constant_weights_and_dynamic_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = foreign_model(dir.path());
    let m = model.to_str().unwrap();
    // Dynamic H and W need a shape: the error names the input and the flag.
    let o = bench(&[m, "--runtime", "ort", "--batch", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("input \"x\" dim 2 is dynamic (H)") && text(&o).contains("--input-shape x="), "{}", text(&o));
    let out = dir.path().join("f.json");
    let o = bench(&[m, "--input-shape", "x=1x3x16x20", "--runtime", "ort,tract", "--batch", "1,3", "--json", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = json(&out);
    let e = &r["models"][0];
    assert_eq!(e["name"], "foreign");
    assert_eq!((e["params"].as_u64(), e["params_source"].as_str()), (Some(8 * 3 * 3 * 3), Some("onnx weights")));
    // tract's cost model at batch 1, 2 FLOPs per multiply-accumulate: the conv, 8 x 16 x 20 outputs x 27 MACs =
    // 8,640 x 16 = 138,240 FLOPs, plus the pooling's sum (8 x 320 adds) and its 1/(H W) scale (8).
    assert_eq!((e["flops"].as_u64(), e["flops_source"].as_str()), (Some(138_240 + 2 * (2_560 + 8)), Some("tract cost model")), "{e}");
    assert_eq!(e["inputs"][1]["shape"], serde_json::json!([1, 8]));
    assert_eq!(r["results"].as_array().unwrap().len(), 4);
    // A wrongly named input is an error naming the model's inputs.
    let o = bench(&[m, "--input-shape", "image=1x3x16x20", "--runtime", "tract", "--batch", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("[\"x\", \"y\"]"), "{}", text(&o));
}

#[test]
fn failures_are_one_line_per_model_and_runtime_and_the_rest_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.onnx");
    std::fs::write(&bad, b"not a protobuf at all").unwrap();
    let mut g = GraphBuilder::new("unsupported");
    g.input("x", Elem::F32, &[Dim::Param("N".into()), Dim::Fixed(4)]).unwrap();
    g.node("NotAnOnnxOp", "mystery", &["x"], &["y"], &[]).unwrap();
    g.output("y", Elem::F32, &[Dim::Param("N".into()), Dim::Fixed(4)]).unwrap();
    let unsupported = dir.path().join("unsupported.onnx");
    std::fs::write(&unsupported, strnas_onnx::to_bytes(&g.finish("test", &[])).unwrap()).unwrap();
    let out = dir.path().join("r.json");
    let o = bench(&[
        bad.to_str().unwrap(),
        unsupported.to_str().unwrap(),
        "arch_specs/tiny/tiny-crnn-ctc.yaml",
        "--runtime",
        "ort,tract",
        "--batch",
        "1",
        "--json",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.lines().any(|l| l.starts_with("error: ") && l.contains("garbage.onnx: not a valid ONNX model")), "{t}");
    assert!(t.lines().any(|l| l.starts_with("error: [ort] ") && l.contains("unsupported.onnx") && l.contains("NotAnOnnxOp")), "{t}");
    assert!(t.lines().any(|l| l.starts_with("error: [tract] ") && l.contains("unsupported.onnx")), "{t}");
    let r = json(&out);
    assert_eq!(r["results"].as_array().unwrap().len(), 2, "the good model is measured on both runtimes");
    assert_eq!(r["errors"].as_array().unwrap().len(), 3);

    // No onnxruntime library: ort fails with the fix, tract still runs.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_strnas"))
        .args(["bench", "arch_specs/tiny/tiny-crnn-ctc.yaml", "--runtime", "ort,tract", "--batch", "1"])
        .args(FAST)
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .current_dir(root())
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("error: [ort] tiny-crnn-ctc: ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so: no such file") && t.contains("make deps"), "{t}");
    assert!(t.contains("tract        1"), "tract still measured: {t}");

    // CUDA on a CPU-only onnxruntime (or a machine without CUDA): an error, never a CPU number labelled CUDA.
    let o = bench(&["arch_specs/tiny/tiny-crnn-ctc.yaml", "--runtime", "ort,tract", "--device", "cuda", "--batch", "1"]);
    let t = text(&o);
    if !strnas::runtime::init_ort(None).is_ok_and(|_| strnas::runtime::ort_has_cuda().unwrap_or(false)) {
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains("error: [ort] ") && t.contains("no CUDA execution provider"), "{t}");
    }
    assert!(t.contains("error: [tract] ") && t.contains("tract runs on the CPU only"), "{t}");
}

/// The gate end to end, with every assertion independent of how busy the machine is: a real calibrated
/// baseline (with its weightless reference graph) is measured; a live run of the unchanged model passes as the
/// same graph (nothing timed to judge); saved runs with known ratios and noise are judged with `--compare` (no
/// timing), calibrated and A/B against the reference; the exact gates (params, FLOPs, ops) fail a changed
/// architecture in a live run whatever its timings, and with `--allow-arch-change` it is timed A/B against the
/// reference graph. That a real +25% model is caught on a quiet machine is `make gate-proof`'s job (a
/// benchmark, not a test).
#[test]
fn latency_gate_verdicts_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("baseline.json");
    let b = base.to_str().unwrap();
    let gate = |model: &str, extra: &[&str]| {
        let mut all = vec!["bench", model, "--runtime", "ort", "--batch", "1", "--rounds", "5", "--min-time", "0.5"];
        all.extend_from_slice(extra);
        all.extend_from_slice(&["--warmup", "3", "--min-iters", "10", "--threads", "1"]);
        strnas(&all)
    };
    let o = gate("arch_specs/tiny/tiny-crnn-ctc.yaml", &["--save-baseline", b]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut saved = json(&base);
    let c = &saved["results"][0]["calibrated"];
    assert_eq!(c["rounds"], 5);
    assert!(c["ratio"].as_f64().unwrap() > 0.0 && c["calibration_ms"].as_f64().unwrap() > 0.0, "{c}");
    // The reference graph beside the baseline: the exported graph without its weights (the model is 2.3 MB).
    let graph = dir.path().join("graphs/tiny-crnn-ctc.onnx");
    let reference = strnas_onnx::from_bytes(&std::fs::read(&graph).unwrap()).unwrap();
    assert!(std::fs::metadata(&graph).unwrap().len() < 64 * 1024);
    assert!(strnas_onnx::weightless::stripped_count(&reference) > 20);

    // The unchanged model in a live run: its graph equals the reference, so it passes without a timed verdict
    // (the calibrated change is shown as drift, not judged).
    let live = dir.path().join("live.json");
    let o = gate("arch_specs/tiny/tiny-crnn-ctc.yaml", &["--baseline", b, "--json", live.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("same graph") && text(&o).contains("gate: passed"), "{}", text(&o));
    let row = &json(&live)["gate"]["rows"][0];
    assert_eq!((row["basis"].as_str(), row["verdict"].as_str()), (Some("identical-graph"), Some("ok")), "{row}");
    assert!(row["drift"].is_f64() && row["changes"].as_array().unwrap().is_empty(), "{row}");
    // The baseline records the engine code it was measured with. Under another onnxruntime version or other
    // engine code the same graph is no longer waved through: it is timed against the baseline's calibrated
    // ratio and reported stale (exit 1) until the baseline is re-recorded.
    assert_eq!(saved["engines"][0]["engine_build"].as_str().unwrap(), strnas::runtime::ENGINE_BUILD);
    for (field, value, why) in [("version", "0.0.0-other", "0.0.0-other -> "), ("engine_build", "0000000000000000", "strnas engine code 0000000000000000 -> ")] {
        let mut other = saved.clone();
        other["engines"][0][field] = value.into();
        let stale = dir.path().join(format!("stale-{field}.json"));
        std::fs::write(&stale, serde_json::to_string(&other).unwrap()).unwrap();
        let out = dir.path().join(format!("stale-{field}-run.json"));
        let o = gate("arch_specs/tiny/tiny-crnn-ctc.yaml", &["--baseline", stale.to_str().unwrap(), "--json", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("gate: BASELINE STALE") && text(&o).contains(why) && text(&o).contains("same graph, engines changed"), "{}", text(&o));
        let row = &json(&out)["gate"]["rows"][0];
        assert_eq!((row["basis"].as_str(), row["verdict"].as_str()), (Some("calibration"), Some("baseline-stale")), "{row}");
        assert_eq!(row["changes"].as_array().unwrap().len(), 1, "timed against the calibrated baseline: {row}");
    }
    // From here on the noise is set, so verdicts do not depend on this machine's load.
    saved["results"][0]["calibrated"]["noise"] = 0.01.into();
    std::fs::write(&base, serde_json::to_string(&saved).unwrap()).unwrap();
    let run_with = |name: &str, ratio_factor: f64, noise: f64, time_factor: f64, cpu: Option<&str>| -> std::path::PathBuf {
        let mut r = saved.clone();
        if let Some(cpu) = cpu {
            r["machine"]["cpu"] = cpu.into();
        }
        let m = &mut r["results"][0];
        for k in ["median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms", "max_ms"] {
            m["stats"][k] = (m["stats"][k].as_f64().unwrap() * time_factor).into();
        }
        let c = &mut m["calibrated"];
        c["ratio"] = (c["ratio"].as_f64().unwrap() * ratio_factor).into();
        c["calibration_ms"] = (c["calibration_ms"].as_f64().unwrap() * time_factor).into();
        c["noise"] = noise.into();
        let p = dir.path().join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
        p
    };
    let compare = |run: &std::path::Path, extra: &[&str]| {
        let mut a = vec!["bench", "--compare", run.to_str().unwrap(), "--baseline", b];
        a.extend_from_slice(extra);
        strnas(&a)
    };

    // Unchanged: passes.
    let o = compare(&run_with("same", 1.0, 0.01, 1.0, None), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("gate: passed"), "{}", text(&o));

    // A run on a machine three times slower (every absolute time x 3, other CPU): the ratios are what is
    // compared, so no false alarm; the note says so.
    let o = compare(&run_with("other", 1.0, 0.01, 3.0, Some("Slower CPU 1000")), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("baseline from other hardware"), "{}", text(&o));

    // 25% slower relative to the calibration, quiet: regressed (threshold 10%).
    let out = dir.path().join("g.json");
    let o = compare(&run_with("slower", 1.25, 0.01, 1.25, None), &["--json", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let row = &json(&out)["gate"]["rows"][0];
    assert_eq!(row["verdict"], "regressed", "{row}");
    assert!((row["changes"][0].as_f64().unwrap() - 0.25).abs() < 1e-9, "{row}");

    // The same slowdown measured with 6.7% noise: the threshold it would need (27%) exceeds --max-noise 15%,
    // so the gate says it cannot judge (exit 1) instead of passing it, as it did before.
    let noisy = run_with("noisy", 1.256, 0.067, 1.256, None);
    let o = compare(&noisy, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("TOO NOISY") && text(&o).contains("gate: TOO NOISY to judge"), "{}", text(&o));
    // With --max-noise raised above the needed threshold, that run is judged (and passes, as the noise allows).
    let o = compare(&noisy, &["--max-noise", "30%"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Percentages are written with their sign: a bare number is refused with the fix.
    let o = compare(&noisy, &["--max-regression", "0.9"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("e.g. 10%"), "{}", text(&o));

    // A live run of a wider variant: the exact gates fail it whatever its timings.
    let o = gate("bench/gate-proof/tiny-crnn-ctc.yaml", &["--baseline", b]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("ARCH CHANGED") && text(&o).contains("params 577349 -> "), "{}", text(&o));

    // Allowed, its latency is timed A/B against the reference graph in the same run (the verdict depends on
    // this machine's timings; what was measured does not).
    let wider = dir.path().join("wider.json");
    let o = gate("bench/gate-proof/tiny-crnn-ctc.yaml", &["--baseline", b, "--allow-arch-change", "--json", wider.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    let mut run = json(&wider);
    let row = &run["gate"]["rows"][0];
    assert_eq!(row["basis"], "reference-graph", "{row}");
    let versus = &run["results"][0]["versus"];
    // 5 rounds, or twice as many per re-run when a busy machine made it too noisy to judge.
    let rounds = versus["ab"]["rounds"].as_u64().unwrap();
    assert!(versus["identical"] == false && [5, 10, 20].contains(&rounds), "{versus}");
    assert!(versus["graph"].as_str().unwrap().ends_with("tiny-crnn-ctc.onnx"), "{versus}");
    // Judged from the saved A/B (the calibrated ratio is not what decides): +25% quiet fails, +2% passes.
    let mut ab_run = |name: &str, ratio: f64| {
        run["results"][0]["versus"]["ab"]["ratio"] = ratio.into();
        run["results"][0]["versus"]["ab"]["noise"] = 0.01.into();
        run["results"][0]["calibrated"]["ratio"] = (saved["results"][0]["calibrated"]["ratio"].as_f64().unwrap() * 3.0).into();
        let p = dir.path().join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_string(&run).unwrap()).unwrap();
        p
    };
    let o = compare(&ab_run("ab-slower", 1.25), &["--allow-arch-change"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("+25.0%") && text(&o).contains("REGRESSED"), "{}", text(&o));
    let o = compare(&ab_run("ab-same", 1.02), &["--allow-arch-change"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("+2.0%") && text(&o).contains("+200.0%"), "the drift is shown, not judged: {}", text(&o));

    // A baseline that is not a bench report is an error naming the file.
    let o = gate("arch_specs/tiny/tiny-crnn-ctc.yaml", &["--baseline", "Cargo.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("Cargo.toml: not a strnas bench report"), "{}", text(&o));
}

#[test]
fn report_draws_svg_and_png_charts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let o = bench(&["arch_specs/tiny/tiny-crnn-ctc.yaml", "arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml", "--runtime", "ort,tract", "--batch", "1", "--json", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // An eval result as `strnas eval --json` writes it (accuracy in %).
    let eval = dir.path().join("e.json");
    std::fs::write(
        &eval,
        r#"{"model": "tiny-crnn-ctc", "spec": "s", "weights": "w", "params": 577349, "flops": 1,
            "datasets": [{"name": "IIIT5k", "path": "", "samples": 10, "filtered": 0, "accuracy": 81.5, "norm_ed": 0.9}],
            "total": {"name": "total", "path": "", "samples": 10, "filtered": 0, "accuracy": 81.5, "norm_ed": 0.9}, "timing": null}"#,
    )
    .unwrap();
    let charts = dir.path().join("charts");
    let o = strnas(&["report", "--bench", out.to_str().unwrap(), "--eval", eval.to_str().unwrap(), "--out", charts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for stem in ["latency", "acc_vs_params", "acc_vs_time"] {
        let svg = std::fs::read_to_string(charts.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("tiny-crnn-ctc"), "{stem}");
        let png = image::open(charts.join(format!("{stem}.png"))).unwrap();
        assert!(png.width() >= 800 && png.height() >= 500);
    }
    let svg = std::fs::read_to_string(charts.join("latency.svg")).unwrap();
    assert!(svg.contains("tiny-limited-3x3-ex3-ctc") && svg.contains(">ort<") && svg.contains(">tract<"), "{svg}");

    // With `bench --relative-to` ratios (set here, so the front does not depend on this machine's timings):
    // the relative-time chart, and the models on its Pareto front named. tiny-limited is 0.8x tiny-crnn's
    // time and less accurate: both are on the front.
    let mut run = json(&out);
    for r in run["results"].as_array_mut().unwrap() {
        if r["model"] == "tiny-limited-3x3-ex3-ctc" && r["runtime"] == "ort" {
            r["relative"] = serde_json::json!({"model": "tiny-crnn-ctc", "ab": {"ratio": 0.8, "noise": 0.01, "rounds": 5, "calibration_ms": 1.0, "ratios": [0.8]}});
        }
    }
    let rel = dir.path().join("rel.json");
    std::fs::write(&rel, serde_json::to_string(&run).unwrap()).unwrap();
    let eval2 = dir.path().join("e2.json");
    std::fs::write(&eval2, std::fs::read_to_string(&eval).unwrap().replace("tiny-crnn-ctc", "tiny-limited-3x3-ex3-ctc").replace("81.5", "40.0")).unwrap();
    let o = strnas(&["report", "--bench", rel.to_str().unwrap(), "--eval", eval.to_str().unwrap(), eval2.to_str().unwrap(), "--out", charts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let svg = std::fs::read_to_string(charts.join("acc_vs_relative_time.svg")).unwrap();
    assert!(svg.contains("time / tiny-crnn-ctc") && svg.contains("Pareto front"), "{svg}");
    assert!(text(&o).contains("Pareto front, accuracy vs time relative to tiny-crnn-ctc (ort, batch 1): tiny-limited-3x3-ex3-ctc, tiny-crnn-ctc"), "{}", text(&o));
    // The bench table takes eval accuracy columns.
    let o = bench(&["arch_specs/tiny/tiny-crnn-ctc.yaml", "--runtime", "ort", "--batch", "1", "--eval", eval.to_str().unwrap()]);
    assert!(text(&o).contains("IIIT5k") && text(&o).contains("81.5"), "{}", text(&o));
}

#[test]
fn tract_cost_model_agrees_with_the_spec_flop_count() {
    // The spec count (convs, LSTM gates, linear layers) against tract's cost model of the exported graph,
    // whose LSTMs are Scan loops: the recursion into loop bodies must multiply by the sequence length.
    for spec in ["arch_specs/tiny/tiny-crnn-ctc.yaml", "arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml"] {
        let arch = strnas::spec::load(&root().join(spec)).unwrap();
        let m = strnas::bench::model::BenchModel::from_arch(arch, spec).unwrap();
        let strnas::bench::model::Resolve::Inputs(inputs) = strnas::bench::model::resolve_inputs(&m, &[], 1).unwrap() else { panic!() };
        let tract = strnas::runtime::tract_flops(&m.bytes, &m.source, &inputs).unwrap() as f64;
        let spec_flops = m.flops.unwrap() as f64;
        // Measured: 102,003,450 vs 101,996,800 (+0.007%) and 101,403,908 vs 99,869,536 (+1.5%: tract also counts
        // reductions, the TPS grid product and the attention decoder's elementwise arithmetic).
        assert!((tract / spec_flops - 1.0).abs() < 0.02, "{spec}: tract {tract} vs spec {spec_flops}");
    }
}

#[test]
fn doctor_measures_the_gemm_peak_on_one_and_on_all_threads() {
    let o = strnas(&["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let peaks = r["gemm_peak"].as_array().unwrap();
    let threads = r["threads"].as_u64().unwrap();
    let counts: Vec<u64> = peaks.iter().map(|p| p["threads"].as_u64().unwrap()).collect();
    assert_eq!(counts, if threads == 1 { vec![1] } else { vec![1, threads] }, "{r}");
    for p in peaks {
        assert!(p["median_gflops"].as_f64().unwrap() > 0.0 && p["runs"].as_u64().unwrap() >= 10, "{p}");
    }
}
