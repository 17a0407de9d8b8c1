//! Canonical YAML text for a [`SpecFile`]: block style for structure, one flow-style line per cell, so that a
//! 31-cell model stays readable and diffs line by line. `parse(to_yaml(s)) == s` (tested).

use std::fmt::Write;

use super::file::*;

fn q(s: &str) -> String {
    // A JSON string literal is a valid YAML double-quoted scalar.
    serde_json::to_string(s).expect("strings serialise")
}

fn stride(s: [u32; 2]) -> String {
    format!("[{}, {}]", s[0], s[1])
}

fn stem(s: &StemSpec) -> String {
    format!("{{kernel: {}, stride: {}, channels: {}}}", s.kernel, stride(s.stride), s.channels)
}

fn first(s: &FirstCellSpec) -> String {
    let mut out = format!("{{kernel: {}", s.kernel);
    if let Some(x) = s.expansion {
        let _ = write!(out, ", expansion: {x}");
    }
    if s.stride != [1, 1] {
        let _ = write!(out, ", stride: {}", stride(s.stride));
    }
    let _ = write!(out, ", channels: {}}}", s.channels);
    out
}

fn cell(c: &CellSpec) -> String {
    let mut fields = vec![];
    if c.op == OpKind::Identity {
        fields.push("op: identity".to_string());
    }
    if let Some(k) = c.kernel {
        fields.push(format!("kernel: {k}"));
    }
    if let Some(x) = c.expansion {
        fields.push(format!("expansion: {x}"));
    }
    if let Some(s) = c.stride {
        fields.push(format!("stride: {}", stride(s)));
    }
    if let Some(ch) = c.channels {
        fields.push(format!("channels: {ch}"));
    }
    format!("{{{}}}", fields.join(", "))
}

fn cells(out: &mut String, cells: &[CellSpec]) {
    out.push_str("  cells:\n");
    for c in cells {
        let role = if c.stride.is_some_and(|s| s != [1, 1]) { "reduction" } else { "normal" };
        let _ = writeln!(out, "    - {:<58} # {role}", cell(c));
    }
}

/// Writes `spec` as canonical YAML (with `header` as comment lines) to `path` atomically, after checking that
/// the text parses and resolves back into a valid architecture.
pub fn write(path: &std::path::Path, spec: &SpecFile, header: &[String]) -> anyhow::Result<()> {
    let text = to_yaml(spec, header);
    let parsed = super::parse(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))?;
    super::resolve(&parsed).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))?;
    crate::io::write_atomic(path, text.as_bytes())
}

/// Renders `spec` as YAML, preceded by `header` lines as `# ` comments.
pub fn to_yaml(spec: &SpecFile, header: &[String]) -> String {
    let mut o = String::new();
    for h in header {
        let _ = writeln!(o, "# {h}").map(|_| ());
    }
    let _ = writeln!(o, "version: {}", spec.version);
    let _ = writeln!(o, "name: {}", q(&spec.name));
    if let Some(d) = &spec.description {
        let _ = writeln!(o, "description: {}", q(d));
    }
    if let Some(r) = &spec.reference {
        let mut f = vec![format!("source: {}", q(&r.source))];
        if let Some(p) = r.params_m {
            f.push(format!("params_m: {p}"));
        }
        if let Some(t) = r.time_ms {
            f.push(format!("time_ms: {t}"));
        }
        let _ = writeln!(o, "reference: {{{}}}", f.join(", "));
    }
    let i = &spec.input;
    let pad = if i.keep_ratio_pad { ", keep_ratio_pad: true" } else { "" };
    let _ = writeln!(o, "input: {{height: {}, width: {}, channels: {}{pad}}}", i.height, i.width, i.channels);
    let mut cs = vec![];
    if let Some(c) = &spec.charset.chars {
        cs.push(format!("chars: {}", q(c)));
    }
    cs.push(format!("case_sensitive: {}", spec.charset.case_sensitive));
    let _ = writeln!(o, "charset: {{{}}}", cs.join(", "));
    let _ = writeln!(o, "batch_max_length: {}", spec.batch_max_length);
    match &spec.rectifier {
        RectifierSpec::None => o.push_str("rectifier: {kind: none}\n"),
        RectifierSpec::Tps(t) => {
            let _ = writeln!(o, "rectifier:\n  kind: tps\n  fiducials: {}\n  fc_hidden: {}", t.fiducials, t.fc_hidden);
            let _ = writeln!(o, "  stem: {}\n  first_cell: {}", stem(&t.stem), first(&t.first_cell));
            cells(&mut o, &t.cells);
        }
    }
    let x = &spec.extractor;
    let _ = writeln!(o, "extractor:\n  stem: {}\n  first_cell: {}", stem(&x.stem), first(&x.first_cell));
    cells(&mut o, &x.cells);
    if let Some(h) = x.head_channels {
        let _ = writeln!(o, "  head_channels: {h}");
    }
    match &spec.sequence {
        SequenceSpec::None => o.push_str("sequence: {kind: none}\n"),
        SequenceSpec::Bilstm(b) => {
            let _ = writeln!(o, "sequence: {{kind: bilstm, layers: {}, hidden: {}}}", b.layers, b.hidden);
        }
    }
    match &spec.prediction {
        PredictionSpec::Ctc => o.push_str("prediction: {kind: ctc}\n"),
        PredictionSpec::Attention(a) => {
            let _ = writeln!(o, "prediction: {{kind: attention, hidden: {}}}", a.hidden);
        }
    }
    o
}
