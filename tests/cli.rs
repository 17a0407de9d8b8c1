//! The `strnas` binary end to end: exit codes, JSON shape, generated files.

mod common;
use common::{root, strnas, text};



#[test]
fn validate_exits_0_on_shipped_specs() {
    let o = strnas(&["spec", "validate", "arch_specs"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("13 file(s): 13 valid, 0 invalid"), "{}", text(&o));
}

#[test]
fn validate_exits_1_and_lists_all_errors_of_all_files() {
    let o = strnas(&["spec", "validate", "arch_specs/paper/limited-3x3-ex3.yaml", "tests/specs/broken"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("ok       arch_specs/paper/limited-3x3-ex3.yaml"), "{t}");
    assert!(t.contains("extractor.cells[3].kernel: must be 3, 5 or 7 (got 4)"), "{t}");
    assert!(t.contains("extractor.cells[1].expansion: must be 3 or 6"), "{t}");
    assert!(t.contains("invalid spec (5 errors)"), "{t}");
}

#[test]
fn missing_file_is_an_error_not_a_failed_check() {
    let o = strnas(&["spec", "validate", "no/such/spec.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no/such/spec.yaml: cannot read"), "{}", text(&o));
    let o = strnas(&["spec", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn show_json_has_params_flops_and_parts() {
    let o = strnas(&["spec", "show", "--json", "arch_specs/paper/limited-7x7-ex6.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let params = v["params"].as_u64().unwrap();
    assert!((params as f64 / 23.857e6 - 1.0).abs() < 0.03, "{params}");
    assert!(v["flops"].as_u64().unwrap() > 1_000_000_000);
    let parts = v["parts"].as_object().unwrap();
    let sum: u64 = ["rectifier", "extractor", "sequence", "prediction"].iter().map(|p| parts[*p]["params"].as_u64().unwrap()).sum();
    assert_eq!(sum, params);
    assert_eq!(v["reference"]["params_m"].as_f64(), Some(23.857));
    assert_eq!(v["seq_len"].as_u64(), Some(25));
    assert_eq!(v["num_classes"].as_u64(), Some(38));
}

#[test]
fn show_text_lists_every_cell_and_the_reference() {
    let o = strnas(&["spec", "show", "arch_specs/paper/limited-5x5-ex3.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("extractor.cells.20"), "{t}");
    assert!(t.contains("rectifier.cells.9"), "{t}");
    assert!(t.contains("reference (STR-NAS Table 1 (NVIDIA P40)): 14.292 x10^6 params"), "{t}");
}

#[test]
fn new_writes_what_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.yaml");
    let o = strnas(&["spec", "new", "--scale", "tiny", "--kernel", "5", "--expansion", "6", "--head", "ctc", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let committed = std::fs::read_to_string(root().join("arch_specs/tiny/tiny-limited-5x5-ex6-ctc.yaml")).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), committed);
}
