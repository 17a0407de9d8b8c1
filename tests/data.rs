//! Data path without libtorch: reference-format LMDB interop, dataset creation, synthetic rendering, label
//! filtering, preprocessing, and the errors bad data gets.

mod common;
use common::{png, root, strnas, text};

use std::path::Path;
use std::process::Output;

use strnas::data::image::Preprocess;
use strnas::data::lmdb::{LmdbReader, LmdbWriter};
use strnas::data::loader::{load_batch, Dataset};
use strnas::spec::charset::Charset;


/// tests/fixtures/reference_lmdb was written by Python `lmdb` exactly as the reference's
/// create_lmdb_dataset.py does (tests/fixtures/make_reference_lmdb.py); its printed values are used here.
#[test]
fn reads_a_dataset_written_by_the_reference_tooling() {
    let dir = root().join("tests/fixtures/reference_lmdb");
    let r = LmdbReader::open(&dir).unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r.labels().unwrap(), vec!["Hello", "w0rld", "can't"]);
    // Filtering as the reference: lowercased, "can't" dropped (apostrophe outside the 36-char set).
    let ds = Dataset::open(&dir, &Charset::default_lowercase(), 25).unwrap();
    assert_eq!(ds.samples, vec![(1, "hello".to_string()), (2, "w0rld".to_string())]);
    assert_eq!(ds.filtered, 1);
    // Pixel (0, 0) is background: PIL luma 255 and 0 -> normalised +1 and -1.
    let pre = Preprocess { height: 32, width: 100, channels: 1, keep_ratio_pad: false };
    let b = load_batch(std::slice::from_ref(&ds), &pre, &vec![(0, 0), (0, 1)]).unwrap();
    assert_eq!(b.images.len(), 2 * 3200);
    assert!((b.images[0] - 1.0).abs() < 1e-6 && (b.images[3200] + 1.0).abs() < 1e-6);
    assert_eq!(b.labels, vec!["hello", "w0rld"]);
}

#[test]
fn create_lmdb_skips_and_lists_unreadable_images() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::write(imgs.join("a.png"), png(30, 10, 200)).unwrap();
    std::fs::write(imgs.join("b.png"), png(30, 10, 20)).unwrap();
    std::fs::write(imgs.join("broken.png"), b"not an image").unwrap();
    let gt = tmp.path().join("gt.txt");
    std::fs::write(&gt, "a.png\tcat\nmissing.png\tdog\nbroken.png\tcow\nno-tab-line\nb.png\tBird\n").unwrap();
    let out = tmp.path().join("ds");
    let o = strnas(&["dataset", "create-lmdb", "--input", imgs.to_str().unwrap(), "--gt", gt.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("2 samples written, 3 skipped"), "{t}");
    assert!(t.contains("missing.png") && t.contains("broken.png") && t.contains("gt.txt:4: no TAB"), "{t}");
    let r = LmdbReader::open(&out).unwrap();
    assert_eq!(r.labels().unwrap(), vec!["cat", "Bird"]);
    assert_eq!(r.image(1).unwrap(), png(30, 10, 200));
    // Refuses to write over an existing dataset.
    let o = strnas(&["dataset", "create-lmdb", "--input", imgs.to_str().unwrap(), "--gt", gt.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("already holds an LMDB dataset"), "{}", text(&o));
}

fn synth(dir: &Path, count: u64, seed: u64) -> Output {
    strnas(&["dataset", "synth", "-o", dir.to_str().unwrap(), "--count", &count.to_string(), "--seed", &seed.to_string(), "--threads", "2"])
}

#[test]
fn synth_is_deterministic_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(synth(&a, 40, 5).status.code(), Some(0));
    assert_eq!(synth(&b, 40, 5).status.code(), Some(0));
    let (ra, rb) = (LmdbReader::open(&a).unwrap(), LmdbReader::open(&b).unwrap());
    assert_eq!(ra.labels().unwrap(), rb.labels().unwrap());
    for i in 1..=40 {
        assert_eq!(ra.image(i).unwrap(), rb.image(i).unwrap(), "image {i}");
    }
    let ds = Dataset::open(&a, &Charset::default_lowercase(), 25).unwrap();
    assert_eq!(ds.len(), 40, "alnum labels all pass the lowercase filter");
    let lens: Vec<usize> = ds.samples.iter().map(|s| s.1.len()).collect();
    // Vocabulary words and random strings both keep to the default 3-10 characters.
    assert!(lens.iter().all(|&n| (3..=10).contains(&n)), "{lens:?}");
    let pre = Preprocess { height: 32, width: 100, channels: 3, keep_ratio_pad: true };
    let plan: Vec<(usize, usize)> = (0..40).map(|i| (0, i)).collect();
    let batch = load_batch(std::slice::from_ref(&ds), &pre, &plan).unwrap();
    assert!(batch.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    let o = strnas(&["dataset", "info", a.to_str().unwrap(), "--json", "-"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["samples"], 40);
}

#[test]
fn damaged_datasets_get_errors_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cs = Charset::default_lowercase();
    let pre = Preprocess { height: 32, width: 100, channels: 1, keep_ratio_pad: false };

    // num-samples claims more samples than there are: the missing label key is named.
    let short = tmp.path().join("short");
    let mut w = LmdbWriter::create(&short).unwrap();
    w.push(png(20, 10, 0), "ok").unwrap();
    w.finish_claiming(2).unwrap();
    let e = format!("{:#}", Dataset::open(&short, &cs, 25).err().unwrap());
    assert!(e.contains("short") && e.contains("label-000000002") && e.contains("missing"), "{e}");

    // An undecodable image: the error names the dataset and the image key.
    let bad = tmp.path().join("bad");
    let mut w = LmdbWriter::create(&bad).unwrap();
    w.push(png(20, 10, 0), "fine").unwrap();
    w.push(b"\x89PNG garbage".to_vec(), "broken").unwrap();
    w.finish().unwrap();
    let ds = Dataset::open(&bad, &cs, 25).unwrap();
    let e = format!("{:#}", load_batch(std::slice::from_ref(&ds), &pre, &vec![(0, 0), (0, 1)]).err().unwrap());
    assert!(e.contains("bad") && e.contains("image-000000002") && e.contains("decode"), "{e}");

    // No num-samples at all (an interrupted write), and a folder that is not a dataset.
    let partial = tmp.path().join("partial");
    let mut w = LmdbWriter::create(&partial).unwrap();
    w.put_raw("image-000000001", &png(4, 4, 0)).unwrap();
    drop(w);
    let e = format!("{:#}", LmdbReader::open(&partial).err().unwrap());
    assert!(e.contains("num-samples is missing"), "{e}");
    let e = format!("{:#}", LmdbReader::open(tmp.path()).err().unwrap());
    assert!(e.contains("not an LMDB dataset"), "{e}");
}

/// An image folder with `gt.txt` (e.g. a folder of SVT word crops) opens as a
/// dataset: labels filtered like LMDB ones, a missing image left out under the evaluation policy and named,
/// substituted under the training policy, an error under the strict one.
#[test]
fn image_folders_with_gt_txt_are_datasets() {
    use strnas::data::loader::{find_all, load_batch_with, BadImages};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("svt-like");
    std::fs::create_dir_all(dir.join("crops")).unwrap();
    std::fs::write(dir.join("crops/1.png"), png(40, 16, 10)).unwrap();
    std::fs::write(dir.join("crops/2.png"), png(40, 16, 200)).unwrap();
    std::fs::write(dir.join("gt.txt"), "crops/1.png\tHOTEL\ncrops/2.png\tbar\ncrops/gone.png\tcafe\nno tab here\ncrops/1.png\tx_y\n").unwrap();
    assert_eq!(find_all(tmp.path()).unwrap(), vec![dir.clone()], "found under its parent, its subfolders not searched");
    let ds = Dataset::open(&dir, &Charset::default_lowercase(), 25).unwrap();
    assert_eq!(ds.samples.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(), vec!["hotel", "bar", "cafe"]);
    assert_eq!(ds.filtered, 1, "x_y has a character outside the charset");
    let pre = Preprocess { height: 32, width: 100, channels: 1, keep_ratio_pad: false };
    let ds = [ds];
    let plan = vec![(0, 0), (0, 1), (0, 2)];
    let e = format!("{:#}", load_batch_with(&ds, &pre, &plan, BadImages::Fail).unwrap_err());
    assert!(e.contains("gone.png"), "{e}");
    let b = load_batch_with(&ds, &pre, &plan, BadImages::Skip).unwrap();
    assert_eq!(b.labels, vec!["hotel", "bar"]);
    assert_eq!(b.images.len(), 2 * 32 * 100);
    let bad = ds[0].bad_images();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].1.contains("gone.png"), "{bad:?}");
    let b = load_batch_with(&ds, &pre, &plan, BadImages::Substitute).unwrap();
    assert_eq!(b.labels, vec!["hotel", "bar", "hotel"], "the next readable sample, wrapping around");
}
