//! `strnas sample`: random architectures of a space within a band of predicted latency ([`crate::latency::sample`]),
//! written as specs: the baseline a search is judged against.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::exit;
use crate::latency::sample::{sample, Band};
use crate::latency::Space;

#[derive(Args, Debug)]
#[command(after_help = "Draws architectures of SPACE uniformly (every searchable cell's candidate at random) and keeps \
    those whose predicted latency under --latency-table lies within --band of --target-ms (rejection sampling: \
    the kept ones are uniform over the band), until --count distinct ones are found. Each is written to \
    --out as a validated spec named <space>-rand-s<seed>-<i>.yaml, with its predicted latency in its \
    description; train, export and bench take them as they are.\n\nThe NAS literature's bar: a search must \
    beat architectures drawn at random at the same cost and trained the same way (Li & Talwalkar 2019; Yang \
    et al. 2020).\n\nExample:\n  strnas sample arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml --latency-table ort.json \
    --count 5 --seed 1 -o runs/random")]
pub struct SampleArgs {
    /// The spec whose skeleton is the space
    space: PathBuf,
    /// Latency table of the space (`strnas latency build`)
    #[arg(long)]
    latency_table: PathBuf,
    /// Centre of the band in ms (default: the table's prediction for the space spec)
    #[arg(long)]
    target_ms: Option<f64>,
    /// Half-width of the band around the target, as a percentage
    #[arg(long, default_value = "5%", value_parser = parse_band)]
    band: f64,
    /// Distinct architectures to draw
    #[arg(long, default_value_t = 5)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Give up after this many draws
    #[arg(long, default_value_t = 10_000_000)]
    max_draws: u64,
    /// Output folder for the specs
    #[arg(long, short)]
    out: PathBuf,
}

/// `5%` (or `0%`): a fraction.
fn parse_band(s: &str) -> Result<f64, String> {
    let num = s.trim().strip_suffix('%').ok_or_else(|| format!("{s:?}: write a percentage with its sign, e.g. 5%"))?;
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a percentage (e.g. 5%)"))?;
    if !(v.is_finite() && (0.0..100.0).contains(&v)) {
        return Err(format!("{s:?}: expected a percentage in [0%, 100%)"));
    }
    Ok(v / 100.0)
}

pub fn run(a: SampleArgs) -> Result<i32> {
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let base = crate::spec::load(&a.space).map_err(|e| anyhow::anyhow!("{e}"))?;
    let space = Space::around(base);
    let table = super::latency_cmd::read_table(&a.latency_table)?;
    let costs = table.edge_costs(&space).with_context(|| format!("--latency-table {}", a.latency_table.display()))?;
    let target_ms = match a.target_ms {
        Some(t) if t > 0.0 && t.is_finite() => t,
        Some(t) => bail!("--target-ms {t}: must be a positive number of milliseconds"),
        None => table.predict(&space.base)?.total_ms,
    };
    let drawn = sample(&space, &costs, Band { target_ms, fraction: a.band }, a.count, a.seed, a.max_draws)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut t = crate::report::Table::new(["spec", "predicted ms", "vs target", "ops"]);
    for s in &drawn {
        let path = a.out.join(format!("{}.yaml", s.arch.name));
        let header = [format!("Written by `strnas sample` (seed {}): a random architecture of the space of {}.", a.seed, space.base.name)];
        crate::spec::emit::write(&path, &s.arch.spec, &header)?;
        let ops: Vec<String> = space.ops_at(&s.choice).iter().map(|o| o.to_string()).collect();
        t.row([path.display().to_string(), format!("{:.3}", s.predicted_ms), format!("{:+.1}%", (s.predicted_ms / target_ms - 1.0) * 100.0), ops.join(" ")]);
    }
    print!("{}", t.render());
    println!("{} architectures within {:.3} ms +-{:.1}% (predicted by {}) written to {}", drawn.len(), target_ms, a.band * 100.0, a.latency_table.display(), a.out.display());
    Ok(exit::OK)
}
