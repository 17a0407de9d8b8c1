//! Training and evaluation with libtorch on tiny synthetic data: the loss goes down, --resume replays the
//! uninterrupted run exactly, eval scores and times, and mismatched inputs get errors naming what is wrong.
#![cfg(feature = "torch")]

mod common;
use common::{root, strnas, text};

use std::path::{Path, PathBuf};

use strnas::data::lmdb::LmdbWriter;
use strnas::data::synth::{default_font_dirs, load_fonts, Renderer, Style};
use strnas::progress::Silent;
use strnas::train::{self, optim::OptimKind, TrainConfig};
use strnas::weights::WeightFile;

fn spec(name: &str) -> PathBuf {
    root().join("arch_specs/tiny").join(name)
}

fn make_synth(dir: &Path, n: u64, seed: u64) {
    let r = Renderer::new(load_fonts(&default_font_dirs()).unwrap(), Style { distortion: 0.3, ..Style::default() }).unwrap();
    let mut w = LmdbWriter::create(dir).unwrap();
    for i in 0..n {
        let (img, label) = r.render_encoded(seed, i).unwrap();
        w.push(img, &label).unwrap();
    }
    w.finish().unwrap();
}

fn config(spec: PathBuf, train: &Path, valid: Option<&Path>, out: &Path, iters: u64) -> TrainConfig {
    TrainConfig {
        spec,
        train_data: vec![train.to_path_buf()],
        batch_ratio: vec![],
        valid_data: valid.map(|v| vec![v.to_path_buf()]).unwrap_or_default(),
        iters,
        batch_size: 16,
        out: out.to_path_buf(),
        resume: false,
        device: tch::Device::Cpu,
        seed: 7,
        optimizer: OptimKind::adam(1e-3),
        grad_clip: 5.0,
        valid_every: 1000,
        workers: 1,
        max_time: None,
    }
}

#[test]
fn training_lowers_the_loss_for_ctc_and_attention() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 32, 1);
    for (name, iters, ratio) in [("tiny-crnn-ctc.yaml", 25, 0.6), ("tiny-limited-3x3-ex3-attn.yaml", 40, 0.9)] {
        let out = tmp.path().join(name);
        let r = train::train(&config(spec(name), &data, Some(&data), &out, iters), &mut Silent).unwrap();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&r.losses[..5]), mean(&r.losses[r.losses.len() - 5..]));
        assert!(last < ratio * first, "{name}: mean loss of the first 5 iterations {first}, of the last 5 {last}");
        assert_eq!(r.final_iteration, iters);
        for f in [train::MODEL_SPEC, train::MODEL_WEIGHTS, train::BEST_NORM_ED, train::CHECKPOINT, "log.txt", "metrics.jsonl"] {
            assert!(out.join(f).is_file(), "{name}: {f} missing");
        }
        let w = WeightFile::read(&out.join(train::MODEL_WEIGHTS)).unwrap();
        let arch = strnas::spec::load(&spec(name)).unwrap();
        w.check_against(&arch).unwrap();
        assert_eq!(w.metadata["format"], "strnas-weights");
    }
}

#[test]
fn resume_continues_exactly_where_it_stopped() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 24, 2);
    let s = spec("tiny-crnn-ctc.yaml");
    // Uninterrupted: 6 iterations.
    let full = tmp.path().join("full");
    let mut c = config(s.clone(), &data, None, &full, 6);
    c.valid_every = 3;
    train::train(&c, &mut Silent).unwrap();
    // Interrupted after 3, then resumed to 6.
    let split = tmp.path().join("split");
    let mut c = config(s.clone(), &data, None, &split, 3);
    c.valid_every = 3;
    train::train(&c, &mut Silent).unwrap();
    // Without --resume an existing run is never overwritten.
    let e = format!("{:#}", train::train(&c, &mut Silent).unwrap_err());
    assert!(e.contains("already holds a run") && e.contains("--resume"), "{e}");
    c.resume = true;
    c.iters = 6;
    c.seed = 999; // ignored: the checkpoint's seed and data order win
    let r = train::train(&c, &mut Silent).unwrap();
    assert_eq!((r.start_iteration, r.final_iteration), (3, 6));

    let a = WeightFile::read(&full.join(train::CHECKPOINT)).unwrap();
    let b = WeightFile::read(&split.join(train::CHECKPOINT)).unwrap();
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    assert!(a.tensors.keys().any(|k| k.starts_with("optimizer/exp_avg/")));
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        let diff = ta.data.iter().zip(&tb.data).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{name}: resumed run differs by {diff}");
    }
    let state: serde_json::Value = serde_json::from_str(&b.metadata["state"]).unwrap();
    assert_eq!(state["iteration"], 6);
    assert_eq!(state["seed"], 7);

    // A checkpoint from another spec is refused.
    c.spec = spec("tiny-limited-3x3-ex3-ctc.yaml");
    let e = format!("{:#}", train::train(&c, &mut Silent).unwrap_err());
    assert!(e.contains("different spec"), "{e}");
}

#[test]
fn eval_scores_times_and_rejects_mismatched_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 20, 3);
    let run = tmp.path().join("run");
    let o = strnas(&[
        "train", spec("tiny-crnn-ctc.yaml").to_str().unwrap(), "--train-data", data.to_str().unwrap(),
        "--iters", "2", "--batch-size", "8", "--out", run.to_str().unwrap(), "--threads", "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Weights are found beside the spec (run/model.yaml -> run/model.safetensors).
    let json = tmp.path().join("eval.json");
    let o = strnas(&["eval", run.join("model.yaml").to_str().unwrap(), "--data", data.to_str().unwrap(), data.to_str().unwrap(), "--json", json.to_str().unwrap(), "--threads", "1"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("time ms/image (batch 1)") && t.contains("params x10^6"), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["total"]["samples"], 40, "two copies of 20 pooled");
    assert_eq!(v["datasets"].as_array().unwrap().len(), 2);
    assert!(v["timing"]["batch1"]["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["params"], strnas::ops::summarize(&strnas::ops::inventory(&strnas::spec::load(&spec("tiny-crnn-ctc.yaml")).unwrap())).params);

    // Weights of another spec: exit 2 and the mismatching tensors by name.
    let o = strnas(&["eval", spec("tiny-limited-3x3-ex3-ctc.yaml").to_str().unwrap(), "--weights", run.join("model.safetensors").to_str().unwrap(), "--data", data.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("weights do not match the spec") && t.contains("rectifier.stem.conv.weight") && t.contains("model.safetensors"), "{t}");
    // Not a weight file at all.
    let o = strnas(&["eval", run.join("model.yaml").to_str().unwrap(), "--weights", run.join("log.txt").to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("log.txt") && text(&o).contains("not a safetensors file"), "{}", text(&o));
    // CUDA on a machine without it (or with it) never panics.
    let o = strnas(&["eval", run.join("model.yaml").to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cuda:7", "--no-timing"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--device cuda"), "{}", text(&o));
}
