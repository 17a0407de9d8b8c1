//! One dependency build for both feature sets: every crate that the libtorch build and the libtorch-free build
//! (`--no-default-features`) share must be compiled with the same features, or Cargo compiles it again, with
//! everything that depends on it (a feature of rand differing rebuilds tract). Cargo.toml names the features
//! tch would otherwise add on its own. This test runs `cargo tree` (offline, from Cargo.lock) for both sets.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package ("name vX.Y.Z") -> its enabled features, over normal and build dependencies.
fn features(extra: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-e", "normal,build", "--no-dedupe", "--prefix", "none", "-f", "{p}|{f}"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs cargo tree");
    assert!(out.status.success(), "cargo tree {extra:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, feats)) = line.split_once('|') else { continue };
        // "name vX (path)" for workspace members, "(*)" on repeats: keep "name vX".
        let package: String = package.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        map.entry(package).or_default().extend(feats.split(',').filter(|f| !f.is_empty()).map(str::to_owned));
    }
    map
}

#[test]
fn the_libtorch_free_build_shares_every_dependency_feature_set() {
    let full = features(&[]);
    let deploy = features(&["--no-default-features"]);
    assert!(deploy.len() > 50, "cargo tree listed only {} packages", deploy.len());
    let mut differing = Vec::new();
    for (package, set) in &deploy {
        if package.starts_with("strnas ") {
            continue;
        }
        let Some(other) = full.get(package) else {
            differing.push(format!("{package}: only in the libtorch-free build"));
            continue;
        };
        if other != set {
            let only_full: Vec<_> = other.difference(set).collect();
            let only_deploy: Vec<_> = set.difference(other).collect();
            differing.push(format!("{package}: libtorch build only {only_full:?}, libtorch-free only {only_deploy:?}"));
        }
    }
    assert!(
        differing.is_empty(),
        "these crates would be compiled twice (name the missing features in Cargo.toml's feature-unification \
         dependencies):\n{}",
        differing.join("\n")
    );
}
