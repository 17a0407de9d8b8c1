//! The text and Markdown view of `strnas bench --profile`: per model and batch, the parts, blocks and layer
//! kinds side by side across runtimes (with tract's time over onnxruntime's), then each runtime's op kinds and
//! heaviest nodes.

use crate::bench::profile::{Profile, ProfileReport, Share};
use crate::report::Table;
use crate::runtime::Runtime;

/// One side-by-side table of a grouping (`rows` picks it) over `ps` (one per runtime, same model and batch).
fn side_by_side(ps: &[&Profile], rows: impl Fn(&Profile) -> &Vec<Share>, label: &str) -> Table {
    let mut header = vec![label.to_string()];
    for p in ps {
        header.push(format!("{} ms", p.runtime.name()));
        header.push(format!("{} %", p.runtime.name()));
    }
    let ort = ps.iter().position(|p| p.runtime == Runtime::Ort);
    let tract = ps.iter().position(|p| p.runtime == Runtime::Tract);
    let ratio = ort.zip(tract);
    if ratio.is_some() {
        header.push("tract / ort".into());
    }
    let mut names: Vec<&str> = vec![];
    for p in ps {
        for r in rows(p) {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
    }
    let mut t = Table::new(header);
    let find = |p: &Profile, name: &str| rows(p).iter().find(|r| r.name == name).map(|r| (r.ms, r.share));
    for name in names {
        let mut row = vec![name.to_string()];
        for p in ps {
            match find(p, name) {
                Some((ms, share)) => row.extend([format!("{ms:.3}"), format!("{:.1}", 100.0 * share)]),
                None => row.extend(["-".to_string(), "-".to_string()]),
            }
        }
        if let Some((o, tr)) = ratio {
            row.push(match (find(ps[o], name), find(ps[tr], name)) {
                (Some((a, _)), Some((b, _))) if a > 0.0 => format!("{:.2}", b / a),
                _ => "-".into(),
            });
        }
        t.row(row);
    }
    t.rule();
    let mut total = vec!["total".to_string()];
    for p in ps {
        total.extend([format!("{:.3}", p.total_ms), "100.0".to_string()]);
    }
    if let Some((o, tr)) = ratio {
        total.push(format!("{:.2}", ps[tr].total_ms / ps[o].total_ms));
    }
    t.row(total);
    t
}

/// The report as text (`markdown`: as Markdown), `top` op kinds and nodes per runtime.
pub fn render(r: &ProfileReport, top: usize, markdown: bool) -> String {
    let show = |t: &Table| if markdown { t.markdown() } else { t.render() };
    let heading = |s: &str, out: &mut String| out.push_str(&if markdown { format!("\n### {s}\n\n") } else { format!("\n{s}\n") });
    let mut out = String::new();
    let mut keys: Vec<(&str, usize)> = vec![];
    for p in &r.profiles {
        if !keys.contains(&(p.model.as_str(), p.batch)) {
            keys.push((&p.model, p.batch));
        }
    }
    for (model, batch) in keys {
        let ps: Vec<&Profile> = r.profiles.iter().filter(|p| p.model == model && p.batch == batch).collect();
        let times: Vec<String> =
            ps.iter().map(|p| format!("{} {:.3} ms profiled ({} runs), {:.3} ms without the profiler", p.runtime.name(), p.total_ms, p.runs, p.plain_ms)).collect();
        heading(&format!("{model}, batch {batch}: {}", times.join("; ")), &mut out);
        out.push_str(&show(&side_by_side(&ps, |p| &p.parts, "part")));
        if ps.iter().any(|p| p.blocks.len() > p.parts.len()) {
            out.push('\n');
            out.push_str(&show(&side_by_side(&ps, |p| &p.blocks, "block")));
        }
        if ps.iter().any(|p| !p.layers.is_empty() && p.layers.len() < p.blocks.len()) {
            out.push('\n');
            out.push_str(&show(&side_by_side(&ps, |p| &p.layers, "layer (all blocks)")));
        }
        for p in &ps {
            heading(&format!("{model}, batch {batch}, {}: op kinds and the {top} heaviest nodes", p.runtime.name()), &mut out);
            let mut ops = Table::new(["op", "nodes", "ms", "%"]);
            for s in p.ops.iter().take(top) {
                ops.row([s.name.clone(), s.nodes.to_string(), format!("{:.3}", s.ms), format!("{:.1}", 100.0 * s.share)]);
            }
            out.push_str(&show(&ops));
            out.push('\n');
            let mut nodes = Table::new(["node", "op", "block", "ms", "%"]);
            for n in p.nodes.iter().take(top) {
                nodes.row([n.name.clone(), n.op.clone(), n.block.clone(), format!("{:.3}", n.ms), format!("{:.1}", 100.0 * n.share)]);
            }
            out.push_str(&show(&nodes));
        }
    }
    let nl = if markdown { "  \n" } else { "\n" };
    heading("Setup", &mut out);
    let mut seen = vec![];
    for p in &r.profiles {
        let e = &p.engine;
        let line = format!("{} {} on {} ({}, {} threads)", e.runtime.name(), e.version, e.device, e.provider, e.threads);
        if !seen.contains(&line) {
            out.push_str(&format!("{line}{nl}"));
            seen.push(line);
        }
    }
    out.push_str(&format!(
        "machine: {} (load {:.2}); strnas {} ({} build){nl}times are means per profiled inference (they add up); \
         onnxruntime's from its profiler, tract's from a clock read around each node of the optimised plan; \
         `{}` is the rest of the inference. onnxruntime's profiler costs microseconds per node: on graphs of many \
         small nodes (the unrolled attention decoder) its shares overstate them; compare with the time without the profiler{nl}",
        r.machine.hardware(),
        r.machine.load_1m,
        r.strnas,
        r.build,
        crate::bench::profile::OUTSIDE_NODES
    ));
    out
}
