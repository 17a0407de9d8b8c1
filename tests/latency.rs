//! Latency tables: keys, sharing of identical edges, refusal of other settings and spaces, prediction as the
//! sum of entries plus the correction, and a real (tiny-budget) build on onnxruntime.

mod common;
use common::{root, strnas, text};

use strnas::latency::{build::distinct_blocks, Space, Table};
use strnas::runtime::{Device, Runtime};

fn tiny(name: &str) -> strnas::spec::Arch {
    strnas::spec::load(&root().join("arch_specs/tiny").join(name)).unwrap()
}

fn constructed(space: &Space) -> Table {
    common::constructed_table(space)
}

#[test]
fn keys_are_stable_and_identical_edges_share_an_entry() {
    let space = Space::around(tiny("tiny-limited-3x3-ex3-attn.yaml"));
    let edge = space.edges.iter().find(|e| e.path == "extractor.cells.8").unwrap();
    // The key names what determines cost, not the block's place or role.
    assert_eq!(edge.node(edge.candidates[1]).layer.cost_key(), "mb3x3-e6-input:24x8x25-output:32x4x25-stride:2x1-idskip:0");
    let normal = space.edges.iter().find(|e| e.path == "extractor.cells.1").unwrap();
    assert_eq!(normal.candidates.len(), 7, "identity + 3 kernels x 2 expansions");
    assert_eq!(normal.node(normal.candidates[0]).layer.cost_key(), "identity-input:16x16x50-output:16x16x50-stride:1x1-idskip:0");
    assert_eq!(normal.node(strnas::spec::Op::MbConv { kernel: 5, expansion: 3 }).layer.cost_key(), "mb5x5-e3-input:16x16x50-output:16x16x50-stride:1x1-idskip:1");
    // extractor.cells.1..3 have the same shapes: their 7 candidates are 7 entries, not 21.
    let same: Vec<_> = ["extractor.cells.1", "extractor.cells.2", "extractor.cells.3"]
        .iter()
        .map(|p| space.edges.iter().find(|e| e.path == *p).unwrap())
        .flat_map(|e| e.candidates.iter().map(|&op| e.node(op).layer.cost_key()).collect::<Vec<_>>())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(same.len(), 7);
    let blocks = distinct_blocks(&space);
    let all: usize = space.edges.iter().map(|e| e.candidates.len()).sum::<usize>() + space.fixed_nodes().len();
    assert!(blocks.len() < all, "{} distinct of {all}", blocks.len());
    assert_eq!(blocks.len(), 144, "distinct blocks of the tiny attention space");
}

#[test]
fn prediction_is_the_sum_of_entries_plus_dispatch_then_corrected() {
    let space = Space::around(tiny("tiny-limited-3x3-ex3-attn.yaml"));
    let t = constructed(&space);
    for name in ["tiny-limited-3x3-ex3-attn.yaml", "tiny-limited-7x7-ex6-attn.yaml"] {
        let arch = tiny(name);
        let p = t.predict(&arch).unwrap();
        let sum: f64 = strnas::ops::network(&arch).iter().map(|n| t.entries[&n.layer.cost_key()].ms).sum::<f64>() + 0.5;
        assert!((p.sum_ms - sum).abs() < 1e-12 && (p.total_ms - (1.25 * sum + 0.125)).abs() < 1e-12, "{name}");
        assert!((p.parts.values().sum::<f64>() + 0.5 - p.sum_ms).abs() < 1e-12);
    }
    // The search's expected latency: one-hot probabilities reproduce the prediction of that architecture.
    let costs = t.edge_costs(&space).unwrap();
    let arch = tiny("tiny-limited-5x5-ex6-attn.yaml");
    let ops = space.ops_of(&arch).unwrap();
    let onehot: Vec<Vec<f64>> = space.edges.iter().zip(&ops).map(|(e, op)| e.candidates.iter().map(|c| f64::from(u8::from(c == op))).collect()).collect();
    assert!((costs.expected(&onehot) - t.predict(&arch).unwrap().total_ms).abs() < 1e-9);
    // Uniform probabilities: the mean of each edge's candidates.
    let uniform: Vec<Vec<f64>> = space.edges.iter().map(|e| vec![1.0 / e.candidates.len() as f64; e.candidates.len()]).collect();
    let mean: f64 = costs.edges.iter().map(|c| c.iter().sum::<f64>() / c.len() as f64).sum();
    assert!((costs.expected(&uniform) - (1.25 * (costs.fixed_ms + mean) + 0.125)).abs() < 1e-9);
}

/// A table measured with other engine code (or before it was recorded) gets a note; the same code, none.
#[test]
fn a_table_of_other_engine_code_is_noted() {
    let space = Space::around(tiny("tiny-limited-3x3-ex3-attn.yaml"));
    let mut t = constructed(&space);
    assert_eq!(t.engine_note(), None);
    t.settings.engine_build = "0123456789abcdef".into();
    let note = t.engine_note().unwrap();
    assert!(note.contains("other engine code (0123456789abcdef") && note.contains("rebuild"), "{note}");
    t.settings.engine_build.clear();
    assert!(t.engine_note().unwrap().contains("predates"));
}

#[test]
fn another_runtime_or_space_is_refused() {
    let space = Space::around(tiny("tiny-limited-3x3-ex3-attn.yaml"));
    let t = constructed(&space);
    t.require(Runtime::Ort, Device::Cpu, 1, 1).unwrap();
    let e = t.require(Runtime::Tract, Device::Cpu, 2, 1).unwrap_err().to_string();
    assert!(e.contains("runtime ort (asked: tract)") && e.contains("threads 1 (asked: 2)"), "{e}");
    // A CTC model is another space: its head has no entry.
    let e = format!("{:#}", t.predict(&tiny("tiny-limited-3x3-ex3-ctc.yaml")).unwrap_err());
    assert!(e.contains("no entry for") && e.contains("space of tiny-limited-3x3-ex3-attn"), "{e}");
    let e = format!("{:#}", space.ops_of(&tiny("tiny-crnn-ctc.yaml")).unwrap_err());
    assert!(e.contains("not in the space"), "{e}");
    // Random architectures stay in the space and validate.
    let mut rng = strnas::rng::Rng::new(5);
    for i in 0..5 {
        let a = space.random(&mut rng, &format!("r{i}")).unwrap();
        assert_eq!(space.ops_of(&a).unwrap().len(), space.edges.len());
        t.predict(&a).unwrap();
    }
}

/// SIGTERM stops `latency build` between measurements with its progress saved (exit 143); the same command
/// then continues from it: the blocks measured before the stop are kept as they were, the rest measured, the
/// progress file removed.
#[cfg(unix)]
#[test]
fn a_stopped_build_continues_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t.json");
    let partial = tmp.path().join("t.json.partial.json");
    let space = root().join("arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml");
    let args = ["latency", "build", space.to_str().unwrap(), "--runtime", "ort", "--fit-random", "1", "-o", out.to_str().unwrap(), "--min-time", "0.15", "--min-iters", "2", "--warmup", "1", "--rounds", "2"];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strnas")).args(args).current_dir(root()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let blocks = |p: &std::path::Path| -> usize {
        std::fs::read_to_string(p).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).map_or(0, |v| v["blocks"].as_object().map_or(0, |b| b.len()))
    };
    while blocks(&partial) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the build ended before its second block");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(143), "exit status after SIGTERM");
    assert!(!out.exists(), "no table from a stopped build");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&partial).unwrap()).unwrap();
    let total = distinct_blocks(&Space::around(strnas::spec::load(&space).unwrap())).len();
    let kept = saved["blocks"].as_object().unwrap();
    assert!(kept.len() >= 2 && kept.len() < total, "{} of {total} blocks saved", kept.len());

    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("continuing from"), "{}", text(&o));
    assert!(!partial.exists(), "the progress file is removed once the table is written");
    let t = Table::read(&out).unwrap();
    assert_eq!(t.entries.len(), total);
    for (key, timed) in kept {
        let before: strnas::measure::Stats = serde_json::from_value(timed["stats"].clone()).unwrap();
        assert_eq!(t.entries[key].stats, before, "{key}: measured again instead of kept");
    }
}

#[test]
fn build_predict_and_check_run_on_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t.json");
    let space = root().join("arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml");
    let fast = ["--min-time", "0", "--min-iters", "2", "--warmup", "1", "--rounds", "2"];
    let mut args = vec!["latency", "build", space.to_str().unwrap(), "--runtime", "ort", "--fit-random", "2", "--fit-specs", space.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(fast);
    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = Table::read(&out).unwrap();
    assert_eq!(t.settings.runtime, Runtime::Ort);
    assert_eq!((t.settings.threads, t.settings.batch, t.correction.models, t.fitted.len()), (1, 1, 3, 3));
    assert_eq!(t.entries.len(), distinct_blocks(&Space::around(strnas::spec::load(&space).unwrap())).len());
    assert!(t.entries.values().all(|e| e.stats.runs >= 2 * 3 && e.ms >= 0.0 && e.ratio > 0.0), "2 rounds of at least 3 runs");
    assert!(t.calibration_ms > 0.0);
    assert_eq!(t.settings.engine_build, strnas::runtime::ENGINE_BUILD, "the table records the engine code it was measured with");
    let o = strnas(&["latency", "predict", root().join("arch_specs/tiny/tiny-limited-7x7-ex6-ctc.yaml").to_str().unwrap(), "--table", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("tiny-limited-7x7-ex6-ctc"), "{}", text(&o));
    let o = strnas(&["latency", "predict", root().join("arch_specs/tiny/tiny-crnn-ctc.yaml").to_str().unwrap(), "--table", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The space spec was fitted on, the random architectures (another seed stream) were not.
    let json = tmp.path().join("check.json");
    let mut args = vec!["latency", "check", space.to_str().unwrap(), "--table", out.to_str().unwrap(), "--random", "2", "--json", json.to_str().unwrap()];
    args.extend(fast);
    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for line in ["held-out: corrected vs calibrated", "held-out: corrected vs plain medians", "all: plain sum vs plain medians", "random-1", "op kind"] {
        assert!(text(&o).contains(line), "{line}: {}", text(&o));
    }
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let held: Vec<(String, bool)> = c["rows"].as_array().unwrap().iter().map(|r| (r["model"].as_str().unwrap().to_string(), r["held_out"].as_bool().unwrap())).collect();
    assert_eq!(held, [("tiny-limited-3x3-ex3-ctc".to_string(), false), ("random-0".into(), true), ("random-1".into(), true)]);
    assert_eq!((c["held_out"]["corrected_vs_medians"]["models"].as_u64(), c["all"]["plain_vs_calibrated"]["models"].as_u64()), (Some(2), Some(3)));
    // Every model was timed in every round, interleaved.
    assert!(c["rows"].as_array().unwrap().iter().all(|r| r["raw"]["runs"].as_u64().unwrap() >= 2 * 3), "{c}");
}

/// `latency additivity` on a tiny budget: every block, pair and span of each model measured, the report's
/// tables printed, the JSON consistent with the chains, the progress file removed; tch refused by name.
#[test]
fn additivity_measures_pairs_spans_and_sessions_on_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a.json");
    let space = root().join("arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml");
    let mut args = vec!["latency", "additivity", space.to_str().unwrap(), "--runtime", "ort", "--random", "1", "--sessions", "2", "-o", out.to_str().unwrap()];
    args.extend(["--min-time", "0", "--min-iters", "2", "--warmup", "1", "--rounds", "2"]);
    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for line in ["neighbours (kinds)", "whole chain", "sum + measured pair excess (in context)", "loaded in 2 sessions"] {
        assert!(text(&o).contains(line), "{line}: {}", text(&o));
    }
    assert!(!tmp.path().join("a.json.partial.json").exists());
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let models = r["observations"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let blocks = r["observations"]["blocks"].as_object().unwrap();
    for m in models {
        let keys: Vec<&str> = m["chain"].as_array().unwrap().iter().map(|l| l["key"].as_str().unwrap()).collect();
        assert!(keys.iter().all(|k| !k.starts_with("identity-")), "identities are left out of the chain");
        for w in keys.windows(2) {
            assert!(blocks.contains_key(&w.join(" + ")), "pair {w:?} not measured");
        }
        assert!(blocks.contains_key(&keys.join(" + ")), "the whole chain was not measured");
    }
    let spans: Vec<&str> = r["analysis"]["spans"].as_array().unwrap().iter().map(|s| s["span"].as_str().unwrap()).collect();
    assert_eq!(spans, ["extractor", "rectifier", "sequence", "whole chain"]);
    assert_eq!(r["analysis"]["sessions"]["sessions"].as_u64(), Some(2));
    assert_eq!(r["analysis"]["scores"].as_array().unwrap().len(), 5);

    let o = strnas(&["latency", "additivity", space.to_str().unwrap(), "--runtime", "tch", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--runtime tch"), "{}", text(&o));
}

#[test]
fn cuda_without_cuda_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t.json");
    let space = root().join("arch_specs/tiny/tiny-crnn-ctc.yaml");
    let tch_says = if cfg!(feature = "torch") { "CUDA device 0 is not available" } else { "built without libtorch" };
    for (rt, dev, says) in [("ort", "cuda", "CUDA"), ("tract", "cuda", "tract runs on the CPU only"), ("tch", "cuda", tch_says)] {
        let o = strnas(&["latency", "build", space.to_str().unwrap(), "--runtime", rt, "--device", dev, "-o", out.to_str().unwrap()]);
        let t = text(&o);
        if rt != "tract" && o.status.code() == Some(0) {
            // A machine with CUDA (onnxruntime-gpu, libtorch CUDA): nothing to refuse.
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{rt} {dev}: {t}");
        assert!(t.contains(says) && !t.contains("panicked"), "{rt} {dev}: {t}");
        assert!(!out.exists(), "no table written on failure");
    }
}

/// Every distinct block of the tiny TPS + attention space, run alone as its tch module and as its exported
/// graph on onnxruntime with the same random weights and inputs, gives the same output: the blocks
/// `latency build --runtime tch` times are the blocks the ONNX tables time.
#[cfg(feature = "torch")]
#[test]
fn tch_blocks_compute_what_their_exported_graphs_compute() {
    use strnas::runtime::{open, open_tch_block, Data, HostTensor, ModelRef};
    let lib = strnas::runtime::libs::find_ort_lib(None).expect("onnxruntime installed (make deps)").path;
    let space = Space::around(tiny("tiny-limited-3x3-ex3-attn.yaml"));
    let blocks = distinct_blocks(&space);
    let mut rng = strnas::rng::Rng::new(7);
    let mut input = |name: &str, port: strnas::ops::Port| {
        let shape: Vec<usize> = port
            .onnx_dims(strnas_onnx::Dim::Fixed(2))
            .into_iter()
            .map(|d| if let strnas_onnx::Dim::Fixed(v) = d { v as usize } else { unreachable!() })
            .collect();
        let n = shape.iter().product();
        HostTensor { name: name.into(), shape, data: Data::F32((0..n).map(|_| rng.range(-1.0, 1.0) as f32).collect()) }
    };
    for (key, node) in &blocks {
        let w = strnas::weights::random_tensors(&node.tensors(), 3);
        let model = strnas::export::export_block(node, &w).unwrap();
        let out = model.graph.output[0].name.clone();
        let mut inputs = vec![input(strnas::export::BLOCK_INPUT, node.layer.input())];
        if let Some(img) = node.layer.reads_image() {
            inputs.push(input("image", strnas::ops::Port::Image(img)));
        }
        let bytes = strnas_onnx::to_bytes(&model).unwrap();
        let mut ort = open(Runtime::Ort, Device::Cpu, &ModelRef { source: key, onnx: &bytes, network: None }, 1, Some(&lib)).unwrap();
        let mut tch = open_tch_block(node, &w, &out, Device::Cpu, 1).unwrap();
        let fetch = |e: &mut dyn strnas::runtime::Engine| {
            e.prepare(&inputs).unwrap();
            e.run().unwrap();
            e.run_and_fetch(&[&out]).unwrap().remove(0)
        };
        let (a, b) = (fetch(ort.as_mut()), fetch(tch.as_mut()));
        assert_eq!(a.shape, b.shape, "{key}");
        let (Data::F32(a), Data::F32(b)) = (&a.data, &b.data) else { panic!("{key}: float outputs") };
        let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * scale.max(1.0), "{key}: tch and onnxruntime differ by {worst} (output scale {scale})");
    }
    let with_weights = blocks.values().find(|n| !n.tensors().is_empty()).unwrap();
    let e = format!("{:#}", open_tch_block(with_weights, &Default::default(), "y", Device::Cpu, 1).err().expect("missing weights are an error"));
    assert!(e.contains("no weights for"), "{e}");
}

/// `latency build --quantize int8`: blocks and whole models timed in their INT8 (QDQ) form, calibrated on the
/// timing inputs; the table records the weight bits, `predict` and `check` say so and `check` times the INT8
/// models; tch, which runs no ONNX, is refused.
#[test]
fn an_int8_table_times_the_quantized_graphs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("int8.json");
    let space = root().join("arch_specs/tiny/tiny-crnn-ctc.yaml");
    let budget = ["--min-time", "0", "--min-iters", "2", "--warmup", "1", "--rounds", "1"];
    let mut args = vec!["latency", "build", space.to_str().unwrap(), "--runtime", "ort", "--fit-random", "1", "--quantize", "int8", "-o", out.to_str().unwrap()];
    args.extend(budget);
    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("int8 (7-bit weights)"), "{}", text(&o));
    let t = Table::read(&out).unwrap();
    assert_eq!(t.settings.int8_weight_bits, Some(7));
    let o = strnas(&["latency", "predict", space.to_str().unwrap(), "--table", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("int8 (7-bit weights)"), "{}", text(&o));
    let mut args = vec!["latency", "check", "--table", out.to_str().unwrap(), "--random", "1"];
    args.extend(budget);
    let o = strnas(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // What is timed: a block's QDQ form, with integer weights, that onnxruntime runs.
    let arch = strnas::spec::load(&space).unwrap();
    let node = strnas::ops::network(&arch).into_iter().find(|n| n.path.starts_with("extractor.cells.")).unwrap();
    let w = strnas::weights::random_tensors(&node.tensors(), 0);
    let model = strnas::export::export_block(&node, &w).unwrap();
    let shape: Vec<usize> = node.layer.input().onnx_dims(strnas_onnx::Dim::Fixed(1)).into_iter().map(|d| if let strnas_onnx::Dim::Fixed(v) = d { v as usize } else { 1 }).collect();
    let n = shape.iter().product();
    let x = strnas::runtime::HostTensor::f32(strnas::export::BLOCK_INPUT, shape, (0..n).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect());
    let q = strnas::export::int8::quantize_for_timing(&model, &[x], 7, None).unwrap();
    assert!(strnas_onnx::inspect(&q).op_counts.get("QuantizeLinear").copied().unwrap_or(0) > 0, "{}", node.path);
    let o = strnas(&["latency", "build", space.to_str().unwrap(), "--runtime", "tch", "--quantize", "int8", "-o", tmp.path().join("x.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--runtime ort or tract"), "{}", text(&o));
}
