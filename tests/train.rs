//! Training and evaluation with libtorch on tiny synthetic data: the loss goes down, --resume replays the
//! uninterrupted run exactly, eval scores and times, and mismatched inputs get errors naming what is wrong.
#![cfg(feature = "torch")]

mod common;
use common::{make_synth, root, strnas, text};

use std::path::{Path, PathBuf};

use strnas::progress::Silent;
use strnas::train::{self, optim::OptimKind, TrainConfig};
use strnas::weights::WeightFile;

fn spec(name: &str) -> PathBuf {
    root().join("arch_specs/tiny").join(name)
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
        schedule: Default::default(),
        groups: vec![],
        grad_clip: 5.0,
        valid_every: 1000,
        log_every: 0,
        tps_init: Default::default(),
        aux_ctc: 0.0,
        zero_init_residual: false,
        allow_changes: false,
        init_from: None,
        workers: 1,
        max_time: None,
    }
}

/// `--init-from`: a run from a trained model's weights starts where that model ended (its first loss is the
/// trained network's, not a fresh one's), with iterations, optimizer and schedule of its own; weights of
/// another spec are refused with the file named.
#[test]
fn init_from_starts_from_the_given_weights() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 32, 1);
    let first = tmp.path().join("first");
    let r1 = train::train(&config(spec("tiny-crnn-ctc.yaml"), &data, None, &first, 30), &mut Silent).unwrap();
    let weights = first.join("model.safetensors");
    let cfg = TrainConfig { init_from: Some(weights.clone()), ..config(spec("tiny-crnn-ctc.yaml"), &data, None, &tmp.path().join("second"), 2) };
    let r2 = train::train(&cfg, &mut Silent).unwrap();
    assert_eq!((r2.start_iteration, r2.final_iteration), (0, 2));
    let (fresh, trained) = (r1.losses[0], r1.losses[r1.losses.len() - 1]);
    assert!(r2.losses[0] < 0.8 * fresh && (r2.losses[0] - trained).abs() < (fresh - trained).abs() / 2.0, "fresh {fresh}, trained {trained}, from the trained weights {}", r2.losses[0]);
    let log = std::fs::read_to_string(tmp.path().join("second/log.txt")).unwrap();
    assert!(log.contains(&format!("with the weights of {}", weights.display())), "{log}");
    let other = TrainConfig { init_from: Some(weights.clone()), ..config(spec("tiny-limited-3x3-ex3-ctc.yaml"), &data, None, &tmp.path().join("third"), 2) };
    let e = format!("{:#}", train::train(&other, &mut Silent).unwrap_err());
    assert!(e.contains("--init-from") && e.contains(&weights.display().to_string()), "{e}");
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

/// `strnas eval MODEL.onnx`: a trained tiny model's export scores the words its tch network scores, on
/// onnxruntime and on tract (every wrong prediction the same text; at most 0.5% of the samples may differ by a
/// near-tie flipped in float arithmetic); a model without strnas metadata is refused, naming the missing key.
#[test]
fn an_exported_model_scores_what_its_network_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 200, 5);
    let run = tmp.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = strnas(&["train", &s(&spec("tiny-crnn-ctc.yaml")), "--train-data", &s(&data), "--iters", "150", "--batch-size", "16", "--lr", "2e-3", "--out", &s(&run), "--threads", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let onnx = tmp.path().join("m.onnx");
    let o = strnas(&["export", &s(&run.join("model.yaml")), "-o", &s(&onnx)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // (label, prediction) of every wrong prediction, and the pooled scores.
    let eval = |model: &Path, extra: &[&str]| {
        let json = tmp.path().join("e.json");
        let mut args = vec!["eval".to_string(), s(model), "--data".into(), s(&data), "--no-timing".into(), "--show-errors".into(), "1000".into(), "--json".into(), s(&json)];
        args.extend(extra.iter().map(|x| x.to_string()));
        let o = strnas(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let wrong: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains(": gt ")).map(|l| l.split(" (confidence").next().unwrap().to_string()).collect();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        (wrong, v["total"]["samples"].as_u64().unwrap(), v["total"]["accuracy"].as_f64().unwrap(), v["params"].clone())
    };
    let (tch_wrong, n, tch_acc, params) = eval(&run.join("model.yaml"), &["--threads", "1"]);
    assert_eq!(n, 200);
    // Not a degenerate comparison: after 150 steps the network reads few words exactly but already writes
    // many different texts (19 distinct in the run that set this bound).
    let distinct: std::collections::BTreeSet<&str> = tch_wrong.iter().map(|w| w.split(" pred ").nth(1).unwrap()).collect();
    assert!(distinct.len() >= 10, "{distinct:?}");
    for rt in ["ort", "tract"] {
        let (wrong, n2, acc, p) = eval(&onnx, &["--runtime", rt]);
        assert_eq!((n2, &p), (n, &params), "{rt}");
        // A sample read differently counts once on each side when both readings are wrong: 0.5% of the samples
        // may differ, each at most twice.
        let differ = wrong.iter().filter(|w| !tch_wrong.contains(w)).count() + tch_wrong.iter().filter(|w| !wrong.contains(w)).count();
        assert!(differ as f64 <= 2.0 * (0.005 * n as f64).max(1.0), "{rt}: {differ} predictions differ from tch's\n{wrong:?}\n{tch_wrong:?}");
        assert!((acc - tch_acc).abs() <= 0.5 + 1e-9, "{rt}: {acc} vs {tch_acc}");
    }
    // A model without strnas metadata: refused, the missing key named.
    let mut proto = strnas_onnx::from_bytes(&std::fs::read(&onnx).unwrap()).unwrap();
    proto.metadata_props.clear();
    let bare = tmp.path().join("bare.onnx");
    std::fs::write(&bare, strnas_onnx::to_bytes(&proto).unwrap()).unwrap();
    let o = strnas(&["eval", &s(&bare), "--data", &s(&data)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bare.onnx") && text(&o).contains("not a strnas model") && text(&o).contains("is missing"), "{}", text(&o));
    // Flags of the other kind of model are refused, not ignored.
    let o = strnas(&["eval", &s(&run.join("model.yaml")), "--runtime", "tract", "--data", &s(&data)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--runtime applies to an exported model"), "{}", text(&o));
    // An exported model carries its weights.
    let o = strnas(&["eval", &s(&onnx), "--weights", &s(&run.join("model.safetensors")), "--data", &s(&data)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--weights"), "{}", text(&o));
}

/// The attention loss of a fixed batch equals cross-entropy computed here by hand from the network's own
/// logits, with the decoder inputs and targets built here from the labels ([GO] c1..cn [s] fed in; c1..cn [s]
/// expected; padding ignored; as deep-text-recognition-benchmark's `train.py`). The same computation with the
/// targets not shifted gives a clearly different value, so an off-by-one in the shift fails.
#[test]
fn attention_loss_matches_a_hand_computed_reference() {
    use tch::{Device, Kind, Tensor};
    tch::set_num_threads(1);
    tch::manual_seed(3);
    let arch = strnas::spec::load(&spec("tiny-limited-3x3-ex3-attn.yaml")).unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = strnas::nn::StrNet::new(&vs.root(), &arch);
    let codec = strnas::data::labels::LabelCodec::from_arch(&arch);
    let labels: Vec<String> = ["ab", "z9", "hello"].iter().map(|s| s.to_string()).collect();
    let images = Tensor::randn([3, 1, 32, 100], (Kind::Float, Device::Cpu));
    // A few steps on this batch first, so the logits depend on the targets (at initialisation every class
    // is about equally likely and any target gives about ln 38).
    let mut opt = train::optim::Optimizer::new(&vs, OptimKind::adam(3e-3));
    for _ in 0..30 {
        let l = train::loss(&net, &codec, &images, &labels);
        opt.zero_grad();
        l.backward();
        opt.step();
    }
    let loss = tch::no_grad(|| train::loss(&net, &codec, &images, &labels)).double_value(&[]);

    // By hand: [GO] = 0, [s] = 1, then the 36 characters in order; 26 decoding steps.
    let (charset, steps, classes) = ("0123456789abcdefghijklmnopqrstuvwxyz", 26usize, 38usize);
    let (mut input, mut target) = (vec![0i64; 3 * steps], vec![0i64; 3 * steps]);
    for (b, label) in labels.iter().enumerate() {
        let cls: Vec<i64> = label.chars().map(|c| 2 + charset.find(c).unwrap() as i64).collect();
        for (k, &c) in cls.iter().enumerate() {
            input[b * steps + k + 1] = c;
            target[b * steps + k] = c;
        }
        input[b * steps + cls.len() + 1] = 1;
        target[b * steps + cls.len()] = 1;
    }
    let logits = tch::no_grad(|| net.forward_t(&images, Some(&Tensor::from_slice(&input).view([3, steps as i64])), true));
    let logp = Vec::<f32>::try_from(logits.log_softmax(2, Kind::Float).contiguous().view(-1)).unwrap();
    let ce = |tgt: &[i64]| {
        let picked: Vec<f64> = tgt.iter().enumerate().filter(|(_, &t)| t != 0).map(|(i, &t)| -logp[i * classes + t as usize] as f64).collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    let reference = ce(&target);
    assert!((loss - reference).abs() < 1e-5 * reference.max(1.0), "loss {loss}, hand-computed {reference}");
    let unshifted = ce(&input);
    assert!(reference < 2.5 && unshifted > reference + 1.0, "the unshifted targets must give a clearly higher value ({unshifted} vs {reference})");
}

/// `strnas train` killed with SIGKILL between two checkpoints and resumed ends with exactly the weights and
/// optimizer state of an uninterrupted run; resuming with another batch size is refused with the difference
/// named, and `--allow-changes` records it.
#[test]
fn sigkill_between_checkpoints_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 24, 4);
    let s = spec("tiny-crnn-ctc.yaml");
    let args = |out: &Path, iters: &str, batch: &str| -> Vec<String> {
        [s.to_str().unwrap(), "--train-data", data.to_str().unwrap(), "--iters", iters, "--batch-size", batch, "--valid-every", "5", "--optimizer", "adam", "--threads", "1", "--out", out.to_str().unwrap()]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let run = |extra: &[&str], out: &Path, iters: &str, batch: &str| {
        let mut a = vec!["train".to_string()];
        a.extend(args(out, iters, batch));
        a.extend(extra.iter().map(|x| x.to_string()));
        strnas(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let full = tmp.path().join("full");
    let o = run(&[], &full, "150", "4");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let killed = tmp.path().join("killed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strnas"))
        .arg("train")
        .args(args(&killed, "150", "4"))
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed.join(train::CHECKPOINT);
    while !ckpt.exists() {
        assert!(child.try_wait().unwrap().is_none(), "training ended before its first checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let state: serde_json::Value = serde_json::from_str(&WeightFile::read(&ckpt).unwrap().metadata["state"]).unwrap();
    let at = state["iteration"].as_u64().unwrap();
    assert!(at < 150, "killed at checkpoint {at}, before the end");

    let o = run(&["--resume"], &killed, "150", "8");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("--batch-size: checkpoint 4, now 8") && t.contains("--allow-changes"), "{t}");

    let o = run(&["--resume"], &killed, "150", "4");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a = WeightFile::read(&full.join(train::CHECKPOINT)).unwrap();
    let b = WeightFile::read(&ckpt).unwrap();
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    for (name, ta) in &a.tensors {
        assert_eq!(ta.data, b.tensors[name].data, "{name}: the resumed run differs (killed at checkpoint {at})");
    }

    let o = run(&["--resume", "--allow-changes"], &killed, "155", "8");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let log = std::fs::read_to_string(killed.join("log.txt")).unwrap();
    assert!(log.contains("--allow-changes: resumed with changed settings: --batch-size: checkpoint 4, now 8"), "{log}");
}

/// The initialisation options: `--tps-init identity` starts the TPS at the identity (its fiducials are the
/// target fiducials for any input), `reference` at DTRB's sheared layout; `--zero-init-residual` makes every
/// residual cell an identity map at the start.
#[test]
fn tps_and_residual_initialisation_options() {
    use strnas::nn::{init_tps, zero_init_residual, StrNet, TpsInit};
    use tch::{Device, Kind, Tensor};
    let arch = strnas::spec::load(&spec("tiny-limited-3x3-ex3-attn.yaml")).unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = StrNet::new(&vs.root(), &arch);
    let x = Tensor::randn([2, 1, 32, 100], (Kind::Float, Device::Cpu));
    let fiducials = |net: &StrNet| Vec::<f32>::try_from(net.fiducials(&x, false).unwrap().select(0, 1).contiguous().view(-1)).unwrap();
    init_tps(&vs, &arch, TpsInit::Identity);
    let want: Vec<f32> = strnas::spec::tps::identity_fiducials(20).into_iter().map(|v| v as f32).collect();
    assert_eq!(fiducials(&net), want);
    init_tps(&vs, &arch, TpsInit::Reference);
    let want: Vec<f32> = strnas::spec::tps::initial_fiducials(20).into_iter().map(|v| v as f32).collect();
    assert_eq!(fiducials(&net), want);

    let loc = &arch.rectifier.as_ref().unwrap().localization;
    let residual = [&arch.extractor.first, &loc.first].into_iter().chain(&arch.extractor.cells).chain(&loc.cells).filter(|c| c.residual()).count();
    assert!(residual > 10);
    assert_eq!(zero_init_residual(&vs, &arch), residual);
    let vars = vs.variables();
    for (i, c) in arch.extractor.cells.iter().enumerate() {
        let g = vars[&format!("extractor.cells.{i}.project.bn.weight")].abs().sum(Kind::Float).double_value(&[]);
        assert_eq!(g == 0.0, c.residual(), "extractor.cells.{i}");
    }
}

/// `--aux-ctc` trains an attention model with an extra CTC head that stays in the checkpoint and out of the
/// model weights (which still export); CTC models refuse it.
#[test]
fn aux_ctc_head_lives_in_checkpoints_only() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 16, 5);
    let out = tmp.path().join("run");
    let mut c = config(spec("tiny-limited-3x3-ex3-attn.yaml"), &data, Some(&data), &out, 3);
    c.aux_ctc = 0.5;
    c.batch_size = 4;
    c.log_every = 1;
    train::train(&c, &mut Silent).unwrap();
    // `report --train` draws the run: loss, accuracy, gradient norm per part (the aux head's "training" too),
    // TPS drift.
    let charts = tmp.path().join("charts");
    let o = strnas(&["report", "--train", out.to_str().unwrap(), "--out", charts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for name in ["train-loss", "train-accuracy", "train-grad-norms", "train-tps-drift"] {
        assert!(charts.join(format!("{name}.svg")).exists() && charts.join(format!("{name}.png")).exists(), "{name}: {}", text(&o));
    }
    let svg = std::fs::read_to_string(charts.join("train-grad-norms.svg")).unwrap();
    assert!(["rectifier", "extractor", "sequence", "prediction", "training"].iter().all(|p| svg.contains(p)), "every part in the legend");
    let ckpt = WeightFile::read(&out.join(train::CHECKPOINT)).unwrap();
    assert!(ckpt.tensors.contains_key("training.aux_ctc.weight") && ckpt.tensors.contains_key("optimizer/exp_avg/training.aux_ctc.weight"));
    let model = WeightFile::read(&out.join(train::MODEL_WEIGHTS)).unwrap();
    assert!(!model.tensors.keys().any(|k| k.starts_with("training.")));
    let o = strnas(&["export", out.join("model.yaml").to_str().unwrap(), "-o", tmp.path().join("m.onnx").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Resuming loads the head and its optimizer state.
    c.resume = true;
    c.iters = 4;
    train::train(&c, &mut Silent).unwrap();
    let mut c = config(spec("tiny-crnn-ctc.yaml"), &data, None, &tmp.path().join("ctc"), 1);
    c.aux_ctc = 0.5;
    let e = format!("{:#}", train::train(&c, &mut Silent).unwrap_err());
    assert!(e.contains("--aux-ctc is for attention models"), "{e}");
}

/// SIGTERM (what a scheduler sends before preempting a job) stops `strnas train` after the current step with a
/// checkpoint of exactly that step: exit status 143 (128 + 15), the stop named in the log, and the checkpoint's
/// weights equal to those of an uninterrupted run of as many iterations; `--resume` then continues from it, and
/// the model it selects is the one an uninterrupted run selects (the stop adds no validation point).
#[cfg(unix)]
#[test]
fn sigterm_checkpoints_the_last_step_and_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 24, 4);
    let s = spec("tiny-crnn-ctc.yaml");
    let args = |out: &Path, iters: &str| -> Vec<String> {
        [s.to_str().unwrap(), "--train-data", data.to_str().unwrap(), "--valid-data", data.to_str().unwrap(), "--iters", iters, "--batch-size", "4", "--valid-every", "1000000", "--log-every", "2", "--lr-schedule", "constant", "--threads", "1", "--out", out.to_str().unwrap()]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let stopped = tmp.path().join("stopped");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strnas"))
        .arg("train")
        .args(args(&stopped, "1000000"))
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // steps.jsonl appears with the first --log-every line: the loop (and its signal handler) is running.
    while !stopped.join("steps.jsonl").exists() {
        assert!(child.try_wait().unwrap().is_none(), "training ended before its first log line");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "exit status after SIGTERM");
    let log = std::fs::read_to_string(stopped.join("log.txt")).unwrap();
    assert!(log.contains("SIGTERM received, checkpoint written (continue with --resume)"), "{log}");
    let ckpt = WeightFile::read(&stopped.join(train::CHECKPOINT)).unwrap();
    let state: serde_json::Value = serde_json::from_str(&ckpt.metadata["state"]).unwrap();
    let at = state["iteration"].as_u64().unwrap();
    assert!(at >= 2 && log.contains(&format!("stopped at iteration {at}:")), "checkpoint at {at}: {log}");

    let full = tmp.path().join("full");
    let o = strnas(&std::iter::once("train".to_string()).chain(args(&full, &at.to_string())).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let uninterrupted = WeightFile::read(&full.join(train::CHECKPOINT)).unwrap();
    for (name, t) in &uninterrupted.tensors {
        assert_eq!(t.data, ckpt.tensors[name].data, "{name}: the checkpoint at SIGTERM differs from {at} uninterrupted iterations");
    }

    let more = (at + 3).to_string();
    let o = strnas(&std::iter::once("train".to_string()).chain(args(&stopped, &more)).chain(["--resume".to_string()]).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let state: serde_json::Value = serde_json::from_str(&WeightFile::read(&stopped.join(train::CHECKPOINT)).unwrap().metadata["state"]).unwrap();
    assert_eq!(state["iteration"].as_u64(), Some(at + 3));
    let metrics = std::fs::read_to_string(stopped.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().filter(|l| l.contains("valid_accuracy")).count() == 1, "validated only at the scheduled end: {metrics}");
    let straight = tmp.path().join("straight");
    let o = strnas(&std::iter::once("train".to_string()).chain(args(&straight, &more)).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (a, b) = (WeightFile::read(&stopped.join(train::MODEL_WEIGHTS)).unwrap(), WeightFile::read(&straight.join(train::MODEL_WEIGHTS)).unwrap());
    for (name, t) in &b.tensors {
        assert_eq!(t.data, a.tensors[name].data, "{name}: the interrupted run selected other weights than an uninterrupted one");
    }
}
