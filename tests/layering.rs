//! The layering rule of src/lib.rs: the top-level modules depend one way, so no two modules reach each other
//! through `crate::` paths. A top-level module is `src/x.rs` or `src/x/`; module A depends on B when code in
//! A (comments stripped, tests included) names `crate::B`, in a path or a `use crate::{B, ...}` group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if let Ok(dir) = std::fs::read_dir(path) {
        for e in dir.flatten() {
            let p = e.path();
            if p.is_dir() || p.extension().is_some_and(|x| x == "rs") {
                rust_files(&p, out);
            }
        }
    }
}

/// Module -> the modules it names, with one file per edge for the message.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut mods = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() {
            mods.insert(name, e.path());
        } else if let Some(stem) = name.strip_suffix(".rs").filter(|s| *s != "lib" && *s != "main") {
            mods.insert(stem.to_string(), e.path());
        }
    }
    let mut graph = BTreeMap::new();
    for (m, path) in &mods {
        let mut files = vec![];
        rust_files(path, &mut files);
        let mut deps: BTreeMap<String, PathBuf> = BTreeMap::new();
        for f in files {
            let text = strip_comments(&std::fs::read_to_string(&f).unwrap());
            let mut named: BTreeSet<String> = BTreeSet::new();
            for (i, _) in text.match_indices("crate::") {
                if i > 0 && text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let after = &text[i + "crate::".len()..];
                if let Some(group) = after.strip_prefix('{') {
                    let body = &group[..group.find(';').unwrap_or(group.len())];
                    named.extend(body.split(',').map(|t| t.trim().split("::").next().unwrap_or("").trim_matches(|c: char| !c.is_alphanumeric() && c != '_').to_string()));
                } else {
                    named.insert(after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
                }
            }
            for t in named.into_iter().filter(|t| mods.contains_key(t) && t != m) {
                deps.entry(t).or_insert_with(|| f.clone());
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

/// Pairs of modules that reach each other, each with the path of edges that closes the cycle.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, PathBuf>>) -> Vec<String> {
    let reach = |from: &str| -> BTreeSet<String> {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from.to_string()]);
        while let Some(m) = stack.pop() {
            for t in graph.get(&m).into_iter().flat_map(|d| d.keys()) {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let mut out = vec![];
    for a in graph.keys() {
        for b in reach(a).into_iter().filter(|b| b > a) {
            if reach(&b).contains(a) {
                out.push(format!("{a} <-> {b} ({a} names: {:?}; {b} names: {:?})", graph[a].keys().collect::<Vec<_>>(), graph[&b].keys().collect::<Vec<_>>()));
            }
        }
    }
    out
}

#[test]
fn top_level_modules_have_no_dependency_cycle() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10 && graph["search"].contains_key("latency"), "the scan found the modules: {:?}", graph.keys());
    let c = cycles(&graph);
    assert!(c.is_empty(), "dependency cycles between top-level modules:\n{}", c.join("\n"));
}

#[test]
fn the_checker_finds_a_constructed_cycle_and_ignores_comments() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/mod.rs"), "use crate::{b, c::X};\n// crate::d\nfn f() {}\n").unwrap();
    std::fs::write(src.join("b.rs"), "/* crate::a */ fn g() {}\n").unwrap();
    std::fs::write(src.join("c.rs"), "fn h() { crate::b::g(); super_crate::a::x(); }\n").unwrap();
    std::fs::write(src.join("d.rs"), "fn k() { crate::c::h(); }\n").unwrap();
    let g = module_graph(src);
    assert_eq!(g["a"].keys().collect::<Vec<_>>(), ["b", "c"]);
    assert!(g["b"].is_empty() && g["c"].keys().collect::<Vec<_>>() == ["b"], "{g:?}");
    assert!(cycles(&g).is_empty());
    std::fs::write(src.join("b.rs"), "fn g() { crate::d::k(); }\n").unwrap();
    let c = cycles(&module_graph(src));
    // b -> d -> c -> b: every pair of the three reaches the other.
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(c[0].starts_with("b <-> c") && c[1].starts_with("b <-> d") && c[2].starts_with("c <-> d"), "{c:?}");
}
