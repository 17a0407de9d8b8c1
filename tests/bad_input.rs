//! Bad input, one class per test: every command that reads the input answers with the documented exit code
//! (1 for a failed check such as `spec validate` of an invalid spec, 2 for an error), a message naming the
//! file, field or flag, and never a panic or a signal. The README's "Bad input" table lists the classes, what strnas
//! says and the test behind each row. Tests marked `#[ignore = "bug: ..."]` describe the behaviour wanted where
//! today's differs. Commands that need libtorch (train, eval, search) run in `torch` builds only.

mod common;
use common::{png, root, strnas, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strnas::data::lmdb::LmdbWriter;

/// Short timing budget for `strnas bench`.
const FAST: &[&str] = &["--warmup", "1", "--min-iters", "2", "--min-time", "0", "--threads", "1"];

/// Asserts the exit code (`None` would be a signal: a crash), that every needle is in stdout + stderr, and
/// that nothing panicked; returns the text.
#[track_caller]
fn expect(o: &Output, code: i32, needles: &[&str]) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(code), "exit status {:?} (None: killed by a signal), wanted {code}:\n{t}", o.status);
    for n in needles {
        assert!(t.contains(n), "{n:?} missing from:\n{t}");
    }
    assert!(!t.contains("panicked") && !t.contains("RUST_BACKTRACE"), "a panic:\n{t}");
    t
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn strnas_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strnas"));
    c.args(args).current_dir(root());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("runs strnas")
}

fn bench(args: &[&str]) -> Output {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(FAST);
    strnas(&all)
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/bad-input").join(name)
}

/// A copy of tiny-crnn-ctc.yaml as `dir/m.yaml`, with random weights beside it (`m.safetensors`) when asked.
fn tiny_spec(dir: &Path, weights: bool) -> PathBuf {
    let spec = dir.join("m.yaml");
    std::fs::copy(root().join("arch_specs/tiny/tiny-crnn-ctc.yaml"), &spec).unwrap();
    if weights {
        let arch = strnas::spec::load(&spec).unwrap();
        strnas::weights::random_init(&arch, 0).write(&dir.join("m.safetensors")).unwrap();
    }
    spec
}

/// The ONNX model strnas exports for `spec` with random weights (seed 0), as protobuf bytes.
fn exported(spec: &Path) -> Vec<u8> {
    let arch = strnas::spec::load(spec).unwrap();
    strnas_onnx::to_bytes(&strnas::export::export(&arch, &strnas::weights::random_init(&arch, 0)).unwrap()).unwrap()
}

/// An LMDB dataset in `dir` with these (image bytes, label) samples.
fn dataset(dir: &Path, samples: &[(Vec<u8>, &str)]) -> PathBuf {
    let mut w = LmdbWriter::create(dir).unwrap();
    for (img, label) in samples {
        w.push(img.clone(), label).unwrap();
    }
    w.finish().unwrap();
    dir.to_path_buf()
}

/// Eight readable samples with labels in the default charset.
fn good_dataset(dir: &Path) -> PathBuf {
    let samples: Vec<(Vec<u8>, &str)> = ["cat", "dog", "cow", "bird", "fish", "ant", "bee", "owl"].iter().enumerate().map(|(i, l)| (png(60, 20, 30 * i as u8), *l)).collect();
    dataset(dir, &samples)
}

fn has_cuda() -> bool {
    #[cfg(feature = "torch")]
    {
        tch::Cuda::is_available()
    }
    #[cfg(not(feature = "torch"))]
    {
        false
    }
}

/// Every command that reads `spec` refuses it: `spec validate` and `spec show` with exit 1 (a failed check),
/// the others with exit 2 (an error), each naming the file and saying `needles`.
fn every_spec_command_refuses(spec: &Path, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = vec![s(spec)];
    n.extend_from_slice(needles);
    let t = expect(&strnas(&["spec", "validate", s(spec)]), 1, &n);
    assert!(t.contains("0 valid, 1 invalid"), "{t}");
    expect(&strnas(&["spec", "show", s(spec)]), 1, &n);
    expect(&strnas(&["export", s(spec), "--init", "random", "-o", s(&tmp.path().join("x.onnx"))]), 2, &n);
    assert!(!tmp.path().join("x.onnx").exists(), "no model written");
    let model = tmp.path().join("good.onnx");
    std::fs::write(&model, exported(&root().join("arch_specs/tiny/tiny-crnn-ctc.yaml"))).unwrap();
    expect(&strnas(&["verify", s(&model), "--spec", s(spec), "--random-init", "0"]), 2, &n);
    let t = expect(&bench(&[s(spec), "--runtime", "tract", "--batch", "1"]), 2, &n);
    assert!(t.lines().any(|l| l.starts_with("error: ") && l.contains(s(spec))), "{t}");
    expect(&strnas(&["latency", "build", s(spec), "--runtime", "tract", "-o", s(&tmp.path().join("t.json"))]), 2, &n);
    #[cfg(feature = "torch")]
    {
        let data = good_dataset(&tmp.path().join("data"));
        let run = tmp.path().join("run");
        expect(&strnas(&["train", s(spec), "--train-data", s(&data), "--iters", "1", "--batch-size", "2", "--out", s(&run)]), 2, &n);
        assert!(!run.exists(), "no run directory for a spec that does not load");
        expect(&strnas(&["eval", s(spec), "--weights", s(&tmp.path().join("w.safetensors")), "--data", s(&data)]), 2, &n);
        expect(&strnas(&["search", s(spec), "--train-data", s(&data), "--valid-data", s(&data), "--out", s(&run)]), 2, &n);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Specs

#[test]
fn malformed_yaml_is_refused_with_file_line_and_column_by_every_command() {
    every_spec_command_refuses(&fixture("malformed.yaml"), &["invalid spec (1 error)", "YAML: did not find expected ',' or '}' at line 6 column"]);
}

#[test]
fn unknown_field_is_refused_with_its_yaml_path_by_every_command() {
    every_spec_command_refuses(
        &root().join("tests/specs/broken/unknown-field.yaml"),
        &["extractor.cells[0]: unknown field `kernal`, expected one of `op`, `kernel`"],
    );
}

#[test]
fn invalid_architecture_is_refused_with_every_error_by_every_command() {
    every_spec_command_refuses(
        &root().join("tests/specs/broken/bad-kernel-and-expansion.yaml"),
        &["invalid spec (2 errors)", "extractor.cells[1].expansion: must be 3 or 6", "extractor.cells[3].kernel: must be 3, 5 or 7 (got 4)"],
    );
}

// ---------------------------------------------------------------------------------------------------------
// Weights

/// Complements tests/export.rs (export: other spec, spec hash) and tests/train.rs (eval: other spec, not a
/// safetensors file): the spec-hash case for eval, verify and train --resume, other-spec weights for verify,
/// and truncated weights for export and verify.
#[test]
fn weights_of_another_spec_are_refused_by_eval_verify_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    // Same tensor names and shapes, other input width and strides: only the spec hash can tell.
    let wider = tmp.path().join("wider.yaml");
    let text_spec = std::fs::read_to_string(&spec).unwrap().replace("width: 100", "width: 256").replace("stride: [2, 1], channels: 64", "stride: [2, 2], channels: 64");
    std::fs::write(&wider, text_spec).unwrap();
    let wider_w = tmp.path().join("wider.safetensors");
    strnas::weights::random_init(&strnas::spec::load(&wider).unwrap(), 0).write(&wider_w).unwrap();
    let other_w = tmp.path().join("other.safetensors");
    strnas::weights::random_init(&strnas::spec::load(&root().join("arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml")).unwrap(), 0).write(&other_w).unwrap();
    let model = tmp.path().join("m.onnx");
    std::fs::write(&model, exported(&spec)).unwrap();
    let hash = ["wider.safetensors: weights do not match the spec", "made from another spec", "input.width: file 256, spec 100", "extractor.cells.4.stride.1: file 2, spec 1"];

    expect(&strnas(&["verify", s(&model), "--spec", s(&spec), "--weights", s(&wider_w)]), 2, &hash);
    expect(&strnas(&["verify", s(&model), "--spec", s(&spec), "--weights", s(&other_w)]), 2, &["other.safetensors: weights do not match the spec", "not in the spec", "with the wrong shape"]);
    let bytes = std::fs::read(&wider_w).unwrap();
    let truncated = tmp.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for cmd in ["export", "verify"] {
        let args = if cmd == "export" {
            vec!["export", s(&spec), "--weights", s(&truncated), "-o", s(&model)]
        } else {
            vec!["verify", s(&model), "--spec", s(&spec), "--weights", s(&truncated)]
        };
        expect(&strnas(&args), 2, &["truncated.safetensors"]);
    }

    #[cfg(feature = "torch")]
    {
        let data = good_dataset(&tmp.path().join("data"));
        expect(&strnas(&["eval", s(&spec), "--weights", s(&wider_w), "--data", s(&data), "--no-timing"]), 2, &hash);
        // A run of the wider spec resumed with this spec: the checkpoint's spec hash is compared.
        let run = tmp.path().join("run");
        let o = strnas(&["train", s(&wider), "--train-data", s(&data), "--iters", "1", "--batch-size", "2", "--out", s(&run), "--threads", "1"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let o = strnas(&["train", s(&spec), "--train-data", s(&data), "--iters", "2", "--batch-size", "2", "--out", s(&run), "--resume", "--threads", "1"]);
        expect(&o, 2, &["checkpoint.safetensors: the checkpoint was trained from a different spec than", "m.yaml"]);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Datasets

/// A dataset (8 good samples) whose data.mdb is then rewritten by `damage`.
fn damaged_dataset(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let d = good_dataset(dir);
    let mdb = d.join("data.mdb");
    let mut bytes = std::fs::read(&mdb).unwrap();
    damage(&mut bytes);
    std::fs::write(&mdb, bytes).unwrap();
    d
}

/// Every command that reads a dataset exits 2 naming it and saying `needles`.
fn every_data_command_refuses(data: &Path, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = vec![s(data)];
    n.extend_from_slice(needles);
    expect(&strnas(&["dataset", "info", s(data)]), 2, &n);
    expect(&strnas(&["dataset", "preview", s(data), "-o", s(&tmp.path().join("p.png"))]), 2, &n);
    #[cfg(feature = "torch")]
    {
        let spec = tiny_spec(tmp.path(), true);
        expect(&strnas(&["eval", s(&spec), "--data", s(data), "--no-timing"]), 2, &n);
        let run = tmp.path().join("run");
        expect(&strnas(&["train", s(&spec), "--train-data", s(data), "--iters", "1", "--batch-size", "2", "--out", s(&run), "--threads", "1"]), 2, &n);
        let good = good_dataset(&tmp.path().join("good"));
        let run = tmp.path().join("run2");
        expect(&strnas(&["train", s(&spec), "--train-data", s(&good), "--valid-data", s(data), "--iters", "1", "--batch-size", "2", "--out", s(&run), "--threads", "1"]), 2, &n);
    }
}

#[test]
fn corrupt_lmdb_is_an_error_naming_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    // Not an LMDB file at all (the meta pages are garbage).
    let garbage = damaged_dataset(&tmp.path().join("garbage"), |b| b.iter_mut().enumerate().for_each(|(i, v)| *v = (i * 7919 % 251) as u8));
    every_data_command_refuses(&garbage, &["not an LMDB file"]);
    // Intact meta pages, zeroed data pages (the B-tree is destroyed).
    let zeroed = damaged_dataset(&tmp.path().join("zeroed"), |b| b[2 * 4096..].iter_mut().for_each(|v| *v = 0));
    every_data_command_refuses(&zeroed, &["MDB_CORRUPTED"]);
    // Readable LMDB, wrong content: num-samples not a number, a label that is not UTF-8.
    let nan = raw_lmdb(&tmp.path().join("nan"), &[("image-000000001", &png(20, 10, 0)), ("label-000000001", b"cat"), ("num-samples", b"many")]);
    every_data_command_refuses(&nan, &["num-samples is not a number"]);
    let latin1 = raw_lmdb(&tmp.path().join("latin1"), &[("image-000000001", &png(20, 10, 0)), ("label-000000001", b"caf\xe9"), ("num-samples", b"1")]);
    every_data_command_refuses(&latin1, &["label-000000001 is not UTF-8"]);
}

/// An LMDB environment in `dir` holding exactly these keys and values.
fn raw_lmdb(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
    use heed::types::Bytes;
    std::fs::create_dir_all(dir).unwrap();
    let mut opts = heed::EnvOpenOptions::new();
    opts.map_size(1 << 24).max_dbs(0);
    // SAFETY: a fresh environment only this function uses.
    let env = unsafe { opts.open(dir) }.unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let db: heed::Database<Bytes, Bytes> = env.create_database(&mut wtxn, None).unwrap();
    for (k, v) in entries {
        db.put(&mut wtxn, k.as_bytes(), v).unwrap();
    }
    wtxn.commit().unwrap();
    env.force_sync().unwrap();
    dir.to_path_buf()
}

/// A dataset copied half-way (data.mdb cut short): LMDB maps the file and reading a page past its end
/// raises SIGBUS today.
#[test]
fn truncated_lmdb_is_an_error_not_a_bus_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cut = damaged_dataset(&tmp.path().join("cut"), |b| b.truncate(b.len() - 4096));
    every_data_command_refuses(&cut, &[]);
}

#[test]
fn empty_data_mdb_says_it_is_not_an_lmdb_file() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = damaged_dataset(&tmp.path().join("empty"), |b| b.clear());
    let o = strnas(&["dataset", "info", s(&empty)]);
    let t = expect(&o, 2, &[s(&empty)]);
    assert!((t.contains("empty") || t.contains("not an LMDB")) && !t.contains("Bad file descriptor"), "{t}");
}

#[test]
fn undecodable_images_are_errors_naming_the_file_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    // infer: each image its own line; a bad one is an error naming it, the good ones are still recognised.
    let spec = tiny_spec(tmp.path(), false);
    let model = tmp.path().join("m.onnx");
    std::fs::write(&model, exported(&spec)).unwrap();
    let ok = tmp.path().join("ok.png");
    std::fs::write(&ok, png(80, 24, 200)).unwrap();
    let truncated = tmp.path().join("truncated.png");
    std::fs::write(&truncated, &png(80, 24, 200)[..60]).unwrap();
    let fake_jpeg = tmp.path().join("fake.jpg");
    std::fs::write(&fake_jpeg, b"\xff\xd8\xff\xe0 not really a JPEG").unwrap();
    let text_png = fixture("not-an-image.png");
    let missing = tmp.path().join("missing.png");
    for rt in ["ort", "tract"] {
        let o = strnas(&["infer", s(&model), s(&ok), s(&text_png), s(&truncated), s(&fake_jpeg), s(&missing), "--runtime", rt]);
        let t = expect(&o, 2, &[]);
        assert!(String::from_utf8_lossy(&o.stdout).starts_with(s(&ok)), "{t}");
        for bad in [&text_png, &truncated, &fake_jpeg, &missing] {
            assert!(t.lines().any(|l| l.starts_with(&format!("error: {}: cannot read the image", s(bad)))), "{rt} {}: {t}", bad.display());
        }
    }
    // An LMDB sample whose image does not decode: the dataset and the key are named.
    let data = dataset(&tmp.path().join("data"), &[(png(60, 20, 0), "cat"), (b"\x89PNG garbage".to_vec(), "dog"), (png(60, 20, 90), "cow")]);
    expect(&strnas(&["dataset", "preview", s(&data), "-o", s(&tmp.path().join("p.png"))]), 2, &[s(&data), "image-000000002"]);
    let o = strnas(&["dataset", "info", s(&data)]);
    expect(&o, 2, &[s(&data), "image-000000002"]);
    #[cfg(feature = "torch")]
    {
        let dir = tmp.path().join("w");
        std::fs::create_dir_all(&dir).unwrap();
        let spec = tiny_spec(&dir, true);
        // eval leaves it out, says so (dataset, key, why) and counts it in the table and the JSON.
        let json = tmp.path().join("eval.json");
        let t = expect(&strnas(&["eval", s(&spec), "--data", s(&data), "--no-timing", "--json", s(&json)]), 0, &[s(&data), "image-000000002", "decode", "left out"]);
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!((r["total"]["samples"].as_u64(), r["total"]["unreadable"].as_u64()), (Some(2), Some(1)), "{t}");
        // Training replaces it by the next sample and finishes; the log names it.
        let run = tmp.path().join("run");
        let o = strnas(&["train", s(&spec), "--train-data", s(&data), "--iters", "3", "--batch-size", "3", "--out", s(&run), "--threads", "1"]);
        expect(&o, 0, &[s(&data), "image-000000002", "decode", "replaced"]);
        let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
        assert!(log.contains("1 image(s) could not be read or decoded") && log.contains("image-000000002"), "{log}");
        assert!(run.join("model.safetensors").exists());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Labels outside the charset

/// Labels in no spec's default charset (0-9a-z): filtered and counted, as the reference does.
const FOREIGN: [&str; 4] = ["straße", "über", "ça", "€uro"];

fn foreign_dataset(dir: &Path) -> PathBuf {
    let samples: Vec<(Vec<u8>, &str)> = FOREIGN.iter().map(|l| (png(60, 20, 100), *l)).collect();
    dataset(dir, &samples)
}

#[test]
fn out_of_charset_labels_are_filtered_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = foreign_dataset(&tmp.path().join("foreign"));
    let t = expect(&strnas(&["dataset", "info", s(&foreign), "--json", "-"]), 0, &[]);
    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(v[0]["samples"], 4, "{v}");
    #[cfg(feature = "torch")]
    {
        let spec = tiny_spec(tmp.path(), true);
        let good = good_dataset(&tmp.path().join("good"));
        // Pooled with a usable dataset: the filtered samples are counted per dataset.
        let o = strnas(&["eval", s(&spec), "--data", s(&good), s(&foreign), "--no-timing", "--json", "-"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!((v["datasets"][1]["samples"].as_u64(), v["datasets"][1]["filtered"].as_u64()), (Some(0), Some(4)), "{v}");
        assert_eq!((v["total"]["samples"].as_u64(), v["total"]["filtered"].as_u64()), (Some(8), Some(4)), "{v}");
        // Validation data with nothing left: an error naming it, and no training.
        let run = tmp.path().join("run");
        let o = strnas(&["train", s(&spec), "--train-data", s(&good), "--valid-data", s(&foreign), "--iters", "1", "--batch-size", "2", "--out", s(&run), "--threads", "1"]);
        expect(&o, 2, &["validation data has no usable samples after label filtering", s(&foreign)]);
        assert!(!run.join("model.safetensors").exists());
    }
}

#[cfg(feature = "torch")]
#[test]
fn eval_with_every_label_out_of_charset_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), true);
    let foreign = foreign_dataset(&tmp.path().join("foreign"));
    expect(&strnas(&["eval", s(&spec), "--data", s(&foreign), "--no-timing"]), 2, &[s(&foreign), "no usable samples"]);
}

#[cfg(feature = "torch")]
#[test]
fn train_data_with_every_label_out_of_charset_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let foreign = foreign_dataset(&tmp.path().join("foreign"));
    let run = tmp.path().join("run");
    let o = strnas(&["train", s(&spec), "--train-data", s(&foreign), "--iters", "1", "--batch-size", "2", "--out", s(&run), "--threads", "1"]);
    expect(&o, 2, &["no usable samples after label filtering", s(&foreign)]);
}

/// The training recipe's flags are one description shared by `train` and `search`: the same bad value gets the
/// same error from both, naming the flag, before any data is read.
#[cfg(feature = "torch")]
#[test]
fn bad_recipe_flags_are_refused_by_train_and_search_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let data = good_dataset(&tmp.path().join("data"));
    let run = tmp.path().join("run");
    let cases: [(&[&str], &str); 4] = [
        (&["--warmup", "5", "--lr-schedule", "constant"], "--warmup needs --lr-schedule cosine or step"),
        (&["--lr=-1"], "--lr must be positive"),
        (&["--lr-schedule", "cosine", "--min-lr-factor", "2"], "--min-lr-factor must be in [0, 1]"),
        (&["--grad-clip", "0"], "--grad-clip must be positive"),
    ];
    for cmd in ["train", "search"] {
        refused_before_writing(cmd, &spec, &data, &run, &cases);
    }
}

/// `cmd SPEC --train-data DATA ... --out RUN` with each case's flags exits 2 with its message, and writes nothing.
#[cfg(feature = "torch")]
fn refused_before_writing(cmd: &str, spec: &Path, data: &Path, run: &Path, cases: &[(&[&str], &str)]) {
    for (flags, needle) in cases {
        let mut args = vec![cmd, s(spec), "--train-data", s(data), "--iters", "1", "--batch-size", "2", "--out", s(run), "--threads", "1"];
        args.extend_from_slice(flags);
        expect(&strnas(&args), 2, &[needle]);
    }
    assert!(!run.exists(), "{cmd} wrote its run directory before refusing a bad flag");
}

/// `search`'s latency-term flags: a negative or non-finite weight, and two forms at once, are refused before
/// anything is written.
#[cfg(feature = "torch")]
#[test]
fn bad_latency_term_flags_are_refused_by_search() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let data = good_dataset(&tmp.path().join("data"));
    let run = tmp.path().join("run");
    let cases: [(&[&str], &str); 5] = [
        (&["--latency-abs=-1"], "--latency-abs must be a finite number >= 0"),
        (&["--mul-log", "1"], "expected A,B"),
        (&["--lambda", "NaN"], "--lambda must be a finite number >= 0"),
        (&["--lambda", "0.1", "--latency-abs", "1"], "--latency-abs"),
        (&["--mul-log", "1,0.6", "--latency-abs", "1"], "cannot be used with"),
    ];
    refused_before_writing("search", &spec, &data, &run, &cases);
}

/// `train --init-from` with a missing file or a file that is not weights of SPEC, and `search --min-odds`
/// below 1, are refused before anything is written, naming the flag.
#[cfg(feature = "torch")]
#[test]
fn bad_starting_weights_and_odds_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let data = good_dataset(&tmp.path().join("data"));
    let run = tmp.path().join("run");
    let missing = tmp.path().join("no-such.safetensors");
    let cases: [(&[&str], &str); 2] = [(&["--init-from", s(&missing)], "--init-from"), (&["--init-from", s(&spec)], "--init-from")];
    refused_before_writing("train", &spec, &data, &run, &cases);
    let cases: [(&[&str], &str); 2] = [(&["--min-odds", "0.5"], "expected a ratio >= 1"), (&["--min-odds", "inf"], "--min-odds")];
    refused_before_writing("search", &spec, &data, &run, &cases);
}

/// `dataset synth --charset` with characters no installed font has (private-use code points) is refused, naming
/// the flag and the characters, before anything is written (it used to render the label "text" and exit 0).
#[test]
fn synth_charset_no_font_covers_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pua");
    let o = strnas(&["dataset", "synth", "-o", s(&out), "--count", "3", "--seed", "1", "--charset", "\u{10FFFD}\u{F0001}", "--word-ratio", "0", "--threads", "1"]);
    expect(&o, 2, &["--charset", "font"]);
    assert!(!out.join("data.mdb").exists(), "no dataset of labels outside the charset");
}

/// `dataset synth --words` with a missing file or one with no usable words is refused, naming the flag and the
/// file, before anything is written.
#[test]
fn synth_bad_word_list_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w");
    let missing = tmp.path().join("no-such-words");
    let o = strnas(&["dataset", "synth", "-o", s(&out), "--count", "3", "--words", s(&missing), "--threads", "1"]);
    expect(&o, 2, &["--words", "no-such-words"]);
    let empty = tmp.path().join("accents");
    std::fs::write(&empty, "café\nnaïve\n").unwrap();
    let o = strnas(&["dataset", "synth", "-o", s(&out), "--count", "3", "--words", s(&empty), "--threads", "1"]);
    expect(&o, 2, &["--words", "accents", "no words"]);
    assert!(!out.join("data.mdb").exists());
}

// ---------------------------------------------------------------------------------------------------------
// ONNX files

/// Complements tests/export.rs (foreign and damaged models under verify and `infer --runtime tract`) and
/// tests/bench.rs (a file that is not protobuf under bench): onnxruntime's path, an empty file, an image
/// given as the model, and a damaged strnas export under bench.
#[test]
fn damaged_or_foreign_onnx_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let bytes = exported(&spec);
    let mut foreign = strnas_onnx::from_bytes(&bytes).unwrap();
    foreign.metadata_props.clear();
    let foreign_p = tmp.path().join("foreign.onnx");
    std::fs::write(&foreign_p, strnas_onnx::to_bytes(&foreign).unwrap()).unwrap();
    let damaged = tmp.path().join("damaged.onnx");
    std::fs::write(&damaged, &bytes[..bytes.len() / 3]).unwrap();
    let empty = tmp.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let image = tmp.path().join("w.png");
    std::fs::write(&image, png(80, 24, 200)).unwrap();
    for (file, says) in [(&foreign_p, "metadata key case_sensitive is missing (not exported by strnas?)"), (&damaged, "not an ONNX model"), (&image, "not an ONNX model")] {
        for rt in ["ort", "tract"] {
            expect(&strnas(&["infer", s(file), s(&image), "--runtime", rt]), 2, &[s(file), says]);
        }
        expect(&strnas(&["verify", s(file), "--spec", s(&spec), "--random-init", "0"]), 2, &[s(file), says]);
    }
    // bench takes any ONNX model, so a foreign one is measured; a damaged one is an error naming it.
    for file in [&damaged, &empty] {
        let t = expect(&bench(&[s(file), "--runtime", "ort,tract", "--batch", "1"]), 2, &[]);
        assert!(t.lines().any(|l| l.starts_with(&format!("error: {}: not a valid ONNX model", s(file)))), "{t}");
    }
}

/// protobuf decodes an empty file as an empty ModelProto; bench then says "no graph", infer and verify blame
/// the metadata as if it were another exporter's model.
#[test]
fn empty_onnx_file_is_not_an_onnx_model() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let empty = tmp.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let image = tmp.path().join("w.png");
    std::fs::write(&image, png(80, 24, 200)).unwrap();
    for rt in ["ort", "tract"] {
        let t = expect(&strnas(&["infer", s(&empty), s(&image), "--runtime", rt]), 2, &[s(&empty), "not"]);
        assert!(t.contains("not an ONNX model") || t.contains("not a valid ONNX model"), "{t}");
    }
    let t = expect(&strnas(&["verify", s(&empty), "--spec", s(&spec), "--random-init", "0"]), 2, &[s(&empty)]);
    assert!(t.contains("not an ONNX model") || t.contains("not a valid ONNX model"), "{t}");
}

// ---------------------------------------------------------------------------------------------------------
// The onnxruntime library

/// A shared library that is not onnxruntime (any system one will do), if one is found.
fn other_shared_library() -> Option<PathBuf> {
    ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/aarch64-linux-gnu/libz.so.1", "/usr/lib64/libz.so.1", "/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Complements tests/bench.rs (bench with ORT_DYLIB_PATH pointing to a missing file): infer, verify, doctor
/// and bench, through ORT_DYLIB_PATH and --ort-lib, with a missing file, a file that is no library and a
/// library that is not onnxruntime. tract keeps working where the command has it.
#[test]
fn missing_or_wrong_onnxruntime_library_is_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let model = tmp.path().join("m.onnx");
    std::fs::write(&model, exported(&spec)).unwrap();
    let image = tmp.path().join("w.png");
    std::fs::write(&image, png(80, 24, 200)).unwrap();
    let missing = tmp.path().join("nowhere/libonnxruntime.so");
    let text_file = tmp.path().join("libonnxruntime.so");
    std::fs::write(&text_file, "not a shared library\n").unwrap();
    let mut libs = vec![(missing.clone(), "no such file"), (text_file.clone(), "cannot load onnxruntime")];
    libs.extend(other_shared_library().map(|p| (p, "does not export `OrtGetApiBase`")));
    for (lib, says) in &libs {
        let l = s(lib);
        let via_env = [("ORT_DYLIB_PATH", l)];
        // infer through the environment variable and through the flag; a missing file gets the install hint.
        if *says == "no such file" {
            expect(&strnas_env(&["infer", s(&model), s(&image)], &via_env), 2, &[&format!("ORT_DYLIB_PATH={l}: no such file"), "make deps"]);
            expect(&strnas(&["--ort-lib", l, "infer", s(&model), s(&image)]), 2, &[&format!("--ort-lib {l}: no such file"), "make deps"]);
        } else {
            expect(&strnas_env(&["infer", s(&model), s(&image)], &via_env), 2, &[l, says]);
            expect(&strnas(&["--ort-lib", l, "infer", s(&model), s(&image)]), 2, &[l, says]);
        }
        // tract needs no library.
        expect(&strnas_env(&["infer", s(&model), s(&image), "--runtime", "tract"], &via_env), 0, &[s(&image)]);
        // verify: with libtorch it compares tract with tch, then fails on onnxruntime; without, onnxruntime is
        // the reference and nothing can be compared.
        let t = expect(&strnas_env(&["verify", s(&model), "--spec", s(&spec), "--random-init", "0"], &via_env), 2, &[l, says]);
        if cfg!(feature = "torch") {
            assert!(t.contains("error: onnxruntime: ") && t.contains("tract vs tch"), "tract still compared: {t}");
        }
        // doctor: exit 1, the documented "cannot load onnxruntime" check failure.
        expect(&strnas_env(&["doctor"], &via_env), 1, &["onnxruntime NOT FOUND", l, says]);
        let mut args = vec!["bench", s(&spec), "--runtime", "ort,tract", "--batch", "1"];
        args.extend_from_slice(FAST);
        let t = expect(&strnas_env(&args, &via_env), 2, &["error: [ort] ", l, says]);
        assert!(t.contains("tract        1"), "tract still measured: {t}");
    }
}

#[test]
fn relative_onnxruntime_path_is_loaded_from_the_working_directory() {
    let lib = strnas::runtime::libs::find_ort_lib(None).expect("onnxruntime installed (make deps)").path;
    let lib = lib.canonicalize().unwrap();
    let (dir, name) = (lib.parent().unwrap(), lib.file_name().unwrap().to_str().unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_strnas")).args(["doctor"]).env("ORT_DYLIB_PATH", name).current_dir(dir).output().unwrap();
    expect(&o, 0, &[name]);
    let o = Command::new(env!("CARGO_BIN_EXE_strnas")).args(["--ort-lib", name, "doctor"]).current_dir(dir).output().unwrap();
    expect(&o, 0, &[name]);
}

#[test]
fn onnxruntime_path_naming_a_directory_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    let t = expect(&strnas_env(&["doctor"], &[("ORT_DYLIB_PATH", d)]), 1, &[d, "directory"]);
    assert!(!t.contains("no such file"), "{t}");
}

// ---------------------------------------------------------------------------------------------------------
// Unsupported ops

/// `spec`'s export with the node producing `logits` changed by `edit` (op type, domain).
fn edited_model(spec: &Path, edit: impl FnOnce(&mut strnas_onnx::ModelProto, usize)) -> Vec<u8> {
    let mut m = strnas_onnx::from_bytes(&exported(spec)).unwrap();
    let k = m.graph.node.iter().position(|n| n.output.iter().any(|o| o == "logits")).expect("a node writes logits");
    edit(&mut m, k);
    strnas_onnx::to_bytes(&m).unwrap()
}

/// Complements tests/bench.rs (a foreign model with a made-up op under bench): a strnas model whose logits come
/// from an op no runtime has, under infer, verify and bench, on onnxruntime and tract.
#[test]
fn unsupported_op_is_an_error_naming_the_op_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let model = tmp.path().join("madeup.onnx");
    std::fs::write(&model, edited_model(&spec, |m, k| m.graph.mut_or_insert_default().node[k].op_type = "MadeUpOp".into())).unwrap();
    let image = tmp.path().join("w.png");
    std::fs::write(&image, png(80, 24, 200)).unwrap();
    expect(&strnas(&["infer", s(&model), s(&image), "--runtime", "ort"]), 2, &[s(&model), "onnxruntime cannot load the model", "MadeUpOp"]);
    expect(&strnas(&["infer", s(&model), s(&image), "--runtime", "tract"]), 2, &[s(&model), "tract cannot optimise the model", "MadeUpOp"]);
    expect(&strnas(&["verify", s(&model), "--spec", s(&spec), "--random-init", "0"]), 2, &["error: onnxruntime: ", "error: tract: ", "MadeUpOp"]);
    let t = expect(&bench(&[s(&model), "--runtime", "ort,tract", "--batch", "1"]), 2, &["MadeUpOp"]);
    assert!(t.lines().any(|l| l.starts_with("error: [ort] ") && l.contains(s(&model))), "{t}");
    assert!(t.lines().any(|l| l.starts_with("error: [tract] ") && l.contains(s(&model))), "{t}");
}

/// A standard op type in a made-up domain: onnxruntime refuses it; tract ignores the domain and runs the
/// node as the standard op, so `infer --runtime tract` prints text computed by another op than the model's.
#[test]
fn op_of_an_unknown_domain_is_refused_by_every_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), false);
    let model = tmp.path().join("domain.onnx");
    let bytes = edited_model(&spec, |m, k| {
        m.graph.mut_or_insert_default().node[k].domain = "com.example.custom".into();
        let mut op = m.opset_import[0].clone();
        op.domain = "com.example.custom".into();
        op.version = 1;
        m.opset_import.push(op);
    });
    std::fs::write(&model, bytes).unwrap();
    let image = tmp.path().join("w.png");
    std::fs::write(&image, png(80, 24, 200)).unwrap();
    expect(&strnas(&["infer", s(&model), s(&image), "--runtime", "ort"]), 2, &[s(&model), "com.example.custom"]);
    expect(&strnas(&["infer", s(&model), s(&image), "--runtime", "tract"]), 2, &[s(&model), "com.example.custom"]);
}

// ---------------------------------------------------------------------------------------------------------
// CUDA

/// Complements tests/bench.rs (bench --runtime ort --device cuda), tests/latency.rs (latency build) and
/// tests/train.rs (eval --device cuda:7): bench with tch, train and eval with plain `cuda`, on a machine
/// without CUDA. Never a CPU number labelled CUDA, never a run directory for a run that cannot start.
#[test]
fn cuda_without_cuda_is_an_error_naming_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_spec(tmp.path(), true);
    if has_cuda() {
        // The positive path on a CUDA machine: training and evaluation run there.
        #[cfg(feature = "torch")]
        {
            let data = good_dataset(&tmp.path().join("data-cuda"));
            let run = tmp.path().join("run-cuda");
            let o = strnas(&["train", s(&spec), "--train-data", s(&data), "--iters", "2", "--batch-size", "2", "--out", s(&run), "--device", "cuda"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let o = strnas(&["eval", s(&run.join("model.yaml")), "--data", s(&data), "--device", "cuda", "--no-timing"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        }
        return;
    }
    // Which error onnxruntime gives: a build without the CUDA execution provider, or one with it and no device.
    let ort_has_ep = strnas::runtime::init_ort(None).is_ok_and(|_| strnas::runtime::ort_has_cuda().unwrap_or(false));
    for dev in ["cuda", "cuda:1"] {
        let t = expect(&bench(&[s(&spec), "--runtime", "ort", "--device", dev, "--batch", "1"]), 2, &["error: [ort] "]);
        let want = if ort_has_ep { "CUDA execution provider on device" } else { "no CUDA execution provider in this build" };
        assert!(t.contains(want), "expected {want:?}: {t}");
        #[cfg(feature = "torch")]
        {
            let n = if dev == "cuda" { "CUDA device 0 is not available" } else { "CUDA device 1 is not available" };
            expect(&bench(&[s(&spec), "--runtime", "tch", "--device", dev, "--batch", "1"]), 2, &["error: [tch] ", n]);
            let data = good_dataset(&tmp.path().join(format!("data-{}", dev.replace(':', "-"))));
            let run = tmp.path().join("run");
            expect(&strnas(&["train", s(&spec), "--train-data", s(&data), "--iters", "1", "--batch-size", "2", "--out", s(&run), "--device", dev]), 2, &["--device cuda", "no CUDA device"]);
            assert!(!run.exists(), "no run directory");
            expect(&strnas(&["eval", s(&spec), "--data", s(&data), "--device", dev]), 2, &["--device cuda", "no CUDA device"]);
        }
    }
}
