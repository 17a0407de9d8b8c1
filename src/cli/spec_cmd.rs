//! `strnas spec validate|show|new`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::exit;
use crate::report::{gflops, millions, thousands, Table};
use crate::ops::{self, Summary};
use crate::spec::plans::{self, Choice};
use crate::spec::{self, Arch};

/// A value parser for a [`Choice`]: accepts its names, and `--help` lists them with their descriptions.
fn choice<T: Choice + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = T::ALL.iter().map(|v| match v.about() {
        Some(about) => PossibleValue::new(v.name()).help(about),
        None => PossibleValue::new(v.name()),
    });
    PossibleValuesParser::new(values).map(|s| s.parse::<T>().unwrap_or_else(|e| unreachable!("a listed name: {e}")))
}

#[derive(Subcommand, Debug)]
pub enum SpecCommand {
    /// Check spec files (or directories of them); print every error with its YAML path.
    /// Exit 1 when any file is invalid.
    Validate {
        #[arg(required = true, value_name = "FILE|DIR")]
        files: Vec<PathBuf>,
    },
    /// Show a spec's layers, shapes, parameters and FLOPs, per cell and per part.
    Show(ShowArgs),
    /// Write a spec of the paper's "limited architecture space" (every cell the same op).
    New(NewArgs),
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[arg(required = true, value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// Print JSON (an object for one file, an array for several): params, flops, parts, blocks
    #[arg(long)]
    json: bool,
    /// One row per model instead of the per-cell table
    #[arg(long)]
    summary: bool,
    /// List every weight tensor with its name and shape
    #[arg(long)]
    tensors: bool,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Which family to generate
    #[arg(long, value_parser = choice::<plans::Space>(), default_value = "limited")]
    space: plans::Space,
    /// Kernel of every cell (limited space)
    #[arg(long, value_parser = ["3", "5", "7"], default_value = "3")]
    kernel: String,
    /// Expansion of every normal and reduction cell (limited space)
    #[arg(long, value_parser = ["3", "6"], default_value = "3")]
    expansion: String,
    #[arg(long, value_parser = choice::<plans::Scale>(), default_value = "paper")]
    scale: plans::Scale,
    #[arg(long, value_parser = choice::<plans::Head>(), default_value = "attention")]
    head: plans::Head,
    /// Model name (default: derived from the options)
    #[arg(long)]
    name: Option<String>,
    /// Output file (default: standard output)
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Instead of one spec, (re)write every spec shipped in arch_specs/ under DIR
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "name"])]
    catalog: Option<PathBuf>,
}

pub fn run(cmd: SpecCommand) -> Result<i32> {
    match cmd {
        SpecCommand::Validate { files } => validate(&files),
        SpecCommand::Show(a) => show(&a),
        SpecCommand::New(a) => new(&a),
    }
}

fn validate(inputs: &[PathBuf]) -> Result<i32> {
    let files = spec::expand_paths(inputs).context("listing spec files")?;
    let (mut invalid, mut unreadable) = (0, 0);
    for f in &files {
        match spec::load(f) {
            Ok(a) => println!("ok       {}  ({}, {} params)", f.display(), a.name, thousands(ops::summarize(&ops::inventory(&a)).params)),
            Err(e) => {
                if e.is_invalid() {
                    invalid += 1;
                } else {
                    unreadable += 1;
                }
                println!("INVALID  {e}");
            }
        }
    }
    if files.is_empty() {
        eprintln!("error: no spec files (*.yaml) under {}", inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        return Ok(exit::ERROR);
    }
    println!("{} file(s): {} valid, {} invalid, {} unreadable", files.len(), files.len() - invalid - unreadable, invalid, unreadable);
    Ok(if unreadable > 0 {
        exit::ERROR
    } else if invalid > 0 {
        exit::CHECK_FAILED
    } else {
        exit::OK
    })
}

fn reference_diff(arch: &Arch, s: &Summary) -> Option<(f64, f64)> {
    let r = arch.spec.reference.as_ref()?.params_m?;
    Some((r, (s.params as f64 / 1e6 / r - 1.0) * 100.0))
}

fn to_json(arch: &Arch, path: &std::path::Path, tensors: bool) -> serde_json::Value {
    let blocks = ops::inventory(arch);
    let s = ops::summarize(&blocks);
    let mut v = json!({
        "file": path.display().to_string(),
        "name": arch.name,
        "arch_hash": spec::arch_hash(&arch.spec),
        "input": {"channels": arch.input.c, "height": arch.input.h, "width": arch.input.w},
        "prediction": arch.prediction.kind(),
        "num_classes": arch.num_classes(),
        "seq_len": arch.seq_len(),
        "params": s.params,
        "flops": s.flops,
        "parts": s.parts,
        "blocks": blocks.iter().map(|b| json!({
            "part": b.part, "path": b.path, "label": b.label, "input": b.input, "output": b.output,
            "params": b.params(), "flops": b.flops(),
        })).collect::<Vec<_>>(),
    });
    if let Some(r) = &arch.spec.reference {
        v["reference"] = serde_json::to_value(r).expect("reference serialises");
    }
    if tensors {
        v["tensors"] = serde_json::to_value(blocks.iter().flat_map(|b| &b.tensors).collect::<Vec<_>>()).expect("tensors serialise");
    }
    v
}

fn detail_table(arch: &Arch) -> String {
    let blocks = ops::inventory(arch);
    let s = ops::summarize(&blocks);
    let mut t = Table::new(["block", "layer", "input", "output", "params", "FLOPs"]);
    let mut last = None;
    for b in &blocks {
        if last.is_some() && last != Some(b.part) {
            t.rule();
        }
        last = Some(b.part);
        t.row([b.path.clone(), b.label.clone(), b.input.clone(), b.output.clone(), thousands(b.params()), thousands(b.flops())]);
    }
    let mut parts = Table::new(["part", "params", "params x10^6", "FLOPs", "share of params"]);
    for (name, c) in &s.parts {
        let share = if s.params > 0 { 100.0 * c.params as f64 / s.params as f64 } else { 0.0 };
        parts.row([name.to_string(), thousands(c.params), millions(c.params), gflops(c.flops), format!("{share:.1}%")]);
    }
    parts.rule();
    parts.row(["total".to_string(), thousands(s.params), millions(s.params), gflops(s.flops), "100.0%".into()]);
    let mut out = format!(
        "{}: input {} ({}), {} head, {} classes, T = {}, arch {}\n\n{}\n{}",
        arch.name,
        arch.input,
        if arch.input.c == 1 { "grayscale" } else { "RGB" },
        arch.prediction.kind(),
        arch.num_classes(),
        arch.seq_len(),
        &spec::arch_hash(&arch.spec)[..12],
        t.render(),
        parts.render()
    );
    if let Some((r, d)) = reference_diff(arch, &s) {
        let src = &arch.spec.reference.as_ref().expect("checked").source;
        out += &format!("reference ({src}): {r:.3} x10^6 params; this spec: {} ({d:+.2}%)\n", millions(s.params));
    }
    out
}

fn summary_table(archs: &[(PathBuf, Arch)]) -> String {
    let mut t = Table::new(["model", "head", "rectifier", "extractor", "sequence", "prediction", "params x10^6", "FLOPs", "reference", "diff"]);
    for (_, a) in archs {
        let s = ops::summarize(&ops::inventory(a));
        let p = |n: &str| millions(s.parts[n].params);
        let (r, d) = reference_diff(a, &s).map_or(("-".into(), "-".into()), |(r, d)| (format!("{r:.3}"), format!("{d:+.2}%")));
        t.row([a.name.clone(), a.prediction.kind().into(), p("rectifier"), p("extractor"), p("sequence"), p("prediction"), millions(s.params), gflops(s.flops), r, d]);
    }
    t.render()
}

fn show(a: &ShowArgs) -> Result<i32> {
    let files = spec::expand_paths(&a.files).context("listing spec files")?;
    let mut archs = vec![];
    let mut failed = None;
    for f in &files {
        match spec::load(f) {
            Ok(arch) => archs.push((f.clone(), arch)),
            Err(e) => {
                eprintln!("error: {e}");
                failed = Some(if e.is_invalid() { exit::CHECK_FAILED } else { exit::ERROR });
            }
        }
    }
    if a.json {
        let values: Vec<_> = archs.iter().map(|(p, arch)| to_json(arch, p, a.tensors)).collect();
        let v = if values.len() == 1 && files.len() == 1 { values.into_iter().next().expect("one") } else { serde_json::Value::Array(values) };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.summary {
        print!("{}", summary_table(&archs));
    } else {
        for (i, (_, arch)) in archs.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", detail_table(arch));
            if a.tensors {
                let mut t = Table::new(["tensor", "shape", "kind", "numel"]);
                for ts in ops::tensors(arch) {
                    t.row([ts.name.clone(), format!("{:?}", ts.shape), format!("{:?}", ts.kind).to_lowercase(), thousands(ts.numel())]);
                }
                print!("\n{}", t.render());
            }
        }
    }
    Ok(failed.unwrap_or(exit::OK))
}

fn checked(req: &plans::Request, name: &str) -> Result<String> {
    let (_, text) = plans::generate(req, name);
    if let Err(errs) = spec::from_str(&text) {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::bail!("the generated spec {name} is invalid:\n  {}", lines.join("\n  "));
    }
    Ok(text)
}

fn new(a: &NewArgs) -> Result<i32> {
    if let Some(dir) = &a.catalog {
        for (rel, req) in plans::catalog() {
            let text = checked(&req, &req.default_name())?;
            let path = dir.join(&rel);
            crate::cli::write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        return Ok(exit::OK);
    }
    let req = plans::Request {
        space: a.space,
        scale: a.scale,
        kernel: a.kernel.parse()?,
        expansion: a.expansion.parse()?,
        head: if a.space == plans::Space::Crnn { plans::Head::Ctc } else { a.head },
    };
    let name = a.name.clone().unwrap_or_else(|| req.default_name());
    let text = checked(&req, &name)?;
    match &a.output {
        Some(p) => crate::cli::write_atomic(p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(exit::OK)
}
