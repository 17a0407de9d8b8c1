//! `strnas rank` (libtorch builds only): how a trained supernet ranks fixed architectures of its space
//! (inherited accuracy after BatchNorm recalibration, [`crate::search::inherit`]), and how well that ranking
//! agrees with stand-alone accuracy (Kendall's tau and Spearman's rho, [`crate::eval::rank`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;

use super::train_cmd::parse_device;
use crate::data::loader::open_all;
use crate::exit;
use crate::latency::Space;
use crate::ops::Part;
use crate::search::inherit::{load_supernet, Scorer};

#[derive(Args, Debug)]
#[command(after_help = "RUN is a `strnas search` run directory (its supernet.safetensors and config.json; either \
    strategy). Every spec under SPECS must be in the run's space. Each is built with the weights it inherits \
    from the supernet, its BatchNorm statistics reset and re-estimated on --recal-images images of \
    --train-data (SPOS's recalibration: a shared BatchNorm's statistics belong to no single path), then scored \
    on --data.\n\nWith --stand-alone (the `strnas eval --json` results of the same specs trained on their own; \
    several results of one model, e.g. two seeds, are averaged), the rank correlation between inherited and \
    stand-alone accuracy is printed and written: the measure of whether the supernet's ranking can be trusted \
    (Yu et al. 2020).\n\nWith --weights-out, every spec's inherited, recalibrated weights are written for \
    `strnas train SPEC --init-from`: fine-tuning every candidate from the same supernet is the protocol's second \
    arm (weight sharing's promise: candidates that start trained, Cai et al. 2020, Once-for-All).\n\nExample:\n  strnas rank runs/search runs/random arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml \
    --train-data data/train --data data/valid --stand-alone runs/eval/*.json --json rank.json")]
pub struct RankArgs {
    /// The search run directory
    run: PathBuf,
    /// Specs of the run's space to score (files or folders)
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    /// Training data for the BatchNorm recalibration (comma-separated)
    #[arg(long, value_delimiter = ',', required = true)]
    train_data: Vec<PathBuf>,
    /// Validation data the inherited networks are scored on (comma-separated)
    #[arg(long, value_delimiter = ',', required = true)]
    data: Vec<PathBuf>,
    /// Training images that re-estimate BatchNorm statistics per spec
    #[arg(long, default_value_t = 256)]
    recal_images: usize,
    /// The space spec (default: the one the run's config.json names)
    #[arg(long)]
    space: Option<PathBuf>,
    /// `strnas eval --json` results of the specs trained stand-alone (matched by model name)
    #[arg(long, num_args = 1..)]
    stand_alone: Vec<PathBuf>,
    /// Also write each spec's inherited weights, BatchNorm recalibrated, as DIR/<model>.safetensors: the
    /// start of `strnas train SPEC --init-from DIR/<model>.safetensors` (inherit, then fine-tune, as OFA deploys)
    #[arg(long, value_name = "DIR")]
    weights_out: Option<PathBuf>,
    /// Write the scores and correlations as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    #[arg(long, default_value_t = 1111)]
    seed: u64,
}

/// The space of a search run: its config.json's space spec and searched parts (or `space` instead of the spec).
fn run_space(run: &Path, space: Option<&Path>) -> Result<Space> {
    let config_path = run.join("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| format!("reading {} (is {} a `strnas search` run?)", config_path.display(), run.display()))?)
        .with_context(|| format!("{}: not JSON", config_path.display()))?;
    let spec = match space {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(config["space"].as_str().with_context(|| format!("{}: no \"space\" (pass --space)", config_path.display()))?),
    };
    let base = crate::spec::load(&spec).map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("the space spec of {}", run.display()))?;
    let parts: Vec<Part> = match config["parts"].as_array() {
        Some(v) => v.iter().filter_map(|p| Part::ALL.into_iter().find(|x| Some(x.name()) == p.as_str())).collect(),
        None => vec![Part::Rectifier, Part::Extractor],
    };
    let mut space = Space::around(base);
    space.restrict(&parts);
    Ok(space)
}

/// Stand-alone accuracies per model name over `files`, in the order given (e.g. seed 1, seed 2).
fn stand_alone(files: &[PathBuf]) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut by_model: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for f in files {
        let r = crate::eval::EvalResult::read(f).with_context(|| format!("--stand-alone {}", f.display()))?;
        by_model.entry(r.model).or_default().push(r.total.accuracy);
    }
    Ok(by_model)
}

/// How well the stand-alone ranking agrees with itself: the correlation between the first and the second
/// result of every model that has two (two seeds of the same recipe). No supernet can be judged to rank
/// better than this against a reference that noisy.
fn repeatability(stand: &BTreeMap<String, Vec<f64>>, models: &[String]) -> Option<crate::eval::rank::RankCorrelation> {
    let (a, b): (Vec<f64>, Vec<f64>) = models.iter().filter_map(|m| stand.get(m).filter(|v| v.len() >= 2).map(|v| (v[0], v[1]))).unzip();
    crate::eval::rank::correlation(&a, &b)
}

pub fn run(a: RankArgs) -> Result<i32> {
    if a.batch_size == 0 || a.recal_images == 0 {
        bail!("--batch-size and --recal-images must be positive");
    }
    crate::eval::tch_eval::check_device(a.device)?;
    let space = run_space(&a.run, a.space.as_deref())?;
    let archs = super::latency_cmd::specs_under(&a.specs)?;
    let choices = archs.iter().map(|arch| space.choice_of(arch).with_context(|| format!("{} is not a spec of the run's space", arch.name))).collect::<Result<Vec<_>>>()?;
    let stand = stand_alone(&a.stand_alone)?;
    let (vs, _net) = load_supernet(&a.run.join(crate::search::run::CHECKPOINT), &space, a.device)?;

    let (charset, max_len) = (&space.base.charset, space.base.batch_max_length as usize);
    let train = open_all(&a.train_data, charset, max_len).context("--train-data")?;
    let sources = vec![train.iter().enumerate().map(|(i, d)| (i, d.len())).collect()];
    let data = crate::train::data::TrainData { datasets: Arc::new(train), sources, ratios: vec![1.0], valid: Arc::new(open_all(&a.data, charset, max_len).context("--data")?) };
    if data.valid.iter().all(|d| d.is_empty()) {
        bail!("--data: no usable samples (charset and batch_max_length of {})", space.base.name);
    }
    let pre = crate::data::image::Preprocess::from_arch(&space.base);
    let scorer = Scorer {
        recal: crate::search::inherit::recal_batches(&data, a.recal_images, a.batch_size, a.seed, pre, a.device)?,
        valid: data.valid.clone(),
        codec: crate::data::labels::LabelCodec::from_arch(&space.base),
        pre,
        batch_size: a.batch_size,
        device: a.device,
    };

    let mut t = crate::report::Table::new(["spec", "inherited acc %", "norm_ED", "stand-alone acc %"]);
    let mut rows = vec![];
    let (mut xs, mut ys) = (vec![], vec![]);
    if let Some(dir) = &a.weights_out {
        std::fs::create_dir_all(dir).with_context(|| format!("--weights-out {}", dir.display()))?;
    }
    for (arch, choice) in archs.iter().zip(&choices) {
        // Under the spec's name: the weights file names the model it is for.
        let (inherited, fvs, net) = scorer.network_of(&vs, &space, choice, &arch.name)?;
        let s = scorer.evaluate(&net)?;
        if let Some(dir) = &a.weights_out {
            let path = dir.join(format!("{}.safetensors", arch.name));
            crate::nn::weights::save_weights(&fvs, &inherited, &path, &[("inherited_from", a.run.display().to_string()), ("recal_images", a.recal_images.to_string())])?;
        }
        let alone = stand.get(&arch.name).map(|v| (v.iter().sum::<f64>() / v.len() as f64, v.len()));
        if let Some((acc, _)) = alone {
            xs.push(s.accuracy);
            ys.push(acc);
        }
        t.row([arch.name.clone(), format!("{:.2}", s.accuracy), format!("{:.4}", s.norm_ed), alone.map_or("-".into(), |(v, n)| format!("{v:.2} ({n} run{})", if n == 1 { "" } else { "s" }))]);
        rows.push(serde_json::json!({ "model": arch.name, "inherited_accuracy": s.accuracy, "inherited_norm_ed": s.norm_ed, "stand_alone_accuracy": alone.map(|x| x.0), "stand_alone_runs": alone.map(|x| x.1) }));
    }
    print!("{}", t.render());
    let corr = crate::eval::rank::correlation(&xs, &ys);
    match (&corr, a.stand_alone.is_empty()) {
        (_, true) => {}
        (Some(c), false) => println!("rank correlation over {} specs: Kendall tau {:.3}, Spearman rho {:.3}", c.models, c.kendall_tau, c.spearman_rho),
        (None, false) => println!("rank correlation: undefined ({} specs with a stand-alone result; at least 2 with distinct accuracies are needed)", xs.len()),
    }
    let names: Vec<String> = archs.iter().map(|a| a.name.clone()).collect();
    let repeat = repeatability(&stand, &names);
    if let Some(c) = &repeat {
        println!(
            "stand-alone repeatability (first vs second result of {} specs): Kendall tau {:.3}, Spearman rho {:.3}: the ceiling of any ranking against this reference",
            c.models, c.kendall_tau, c.spearman_rho
        );
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({ "run": a.run.display().to_string(), "space": space.base.name, "recal_images": a.recal_images, "specs": rows, "correlation": corr, "stand_alone_repeatability": repeat });
        let text = serde_json::to_string_pretty(&doc)?;
        if path == Path::new("-") {
            println!("{text}");
        } else {
            crate::io::write_atomic(path, text.as_bytes())?;
        }
    }
    Ok(exit::OK)
}
