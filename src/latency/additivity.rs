//! Are block latencies additive? nn-Meter's test (Zhang et al. 2021) on a space's own blocks: every pair of
//! neighbouring blocks is timed as one graph against the two blocks alone; each part of a model (rectifier,
//! extractor, sequence + prediction) and its whole chain of blocks as one graph against the sum of its
//! blocks; and the whole model against all of these.
//!
//! A table sums blocks measured alone. That holds when a block costs the same beside its neighbour as alone;
//! it fails where the runtime fuses across the boundary (a pair costs less than its parts: nn-Meter's
//! "kernel" spanning two ops) or where the neighbour leaves caches warm or cold. For blocks A, B timed alone
//! (`T_A`, `T_B`), together (`T_AB`) and the dispatch cost `d` (an empty graph), the pair's excess is
//! `T_AB - T_A - T_B + d` and its ratio `(T_AB - d) / ((T_A - d) + (T_B - d))`: 1 for additive blocks.
//! Pairs are grouped by the kinds of their blocks ([`pair_kind`]); whole models are then predicted three
//! ways: the sum of their blocks (what a table does before its correction), that sum plus the measured excess
//! of each of their neighbouring pairs (blocks timed in context), and that sum corrected by the median ratio
//! of each pair's kinds over the pairs of other models only (a per-kind-pair model, held out). Parts and the
//! whole chain locate what pairs do not explain: a part costing more as one graph than its blocks alone is
//! context beyond the neighbour (caches a longer chain leaves cold); the whole chain against the exported
//! model, what the model adds around its blocks (its output ArgMax, its own weights).
//!
//! Identity cells cost nothing and are left out of the chain: a block's neighbour is the next block that
//! runs. Times are in the table's time base (calibrated ratio x the calibration's time), so drift cancels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::build::{self, Options};
use super::partial::Partial;
use super::space::Space;
use super::table::{self, Accuracy, Correction};
use crate::ops::Node;
use crate::progress::Progress;
use crate::spec::arch::Arch;

/// A measurement in the table's time base, dispatch included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Obs {
    pub ms: f64,
    /// One standard error (the calibrated ratio's noise x `ms`).
    pub sigma_ms: f64,
}

/// A block of a model's chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub path: String,
    pub key: String,
    /// The span it is timed in with its part's other blocks ([`span_of`]).
    pub span: String,
}

/// A whole model: its measured time and the blocks that run in it, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelObs {
    pub name: String,
    pub ms: f64,
    pub chain: Vec<Link>,
}

/// Everything measured: the dispatch, blocks, pairs and spans by key ([`build::chain_key`]), whole models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observations {
    /// The runtime as its session reports it (empty in constructed data).
    pub engine: Option<crate::runtime::EngineInfo>,
    pub dispatch: Obs,
    pub blocks: BTreeMap<String, Obs>,
    pub models: Vec<ModelObs>,
    /// The first model loaded in several sessions and timed interleaved, ms of each session.
    pub sessions: Vec<f64>,
}

/// One distinct pair of neighbouring blocks.
#[derive(Debug, Clone, Serialize)]
pub struct PairRow {
    /// Paths of its first occurrence.
    pub first: String,
    pub second: String,
    /// `kind -> kind` ([`pair_kind`]).
    pub kinds: String,
    pub key: String,
    /// Net of dispatch: each block alone, and the two as one graph.
    pub a_ms: f64,
    pub b_ms: f64,
    pub pair_ms: f64,
    /// `pair - a - b` (negative: the pair is cheaper than its parts).
    pub excess_ms: f64,
    pub ratio: f64,
    /// One standard error of the excess.
    pub sigma_ms: f64,
    /// Ratio off 1 by more than 10% and the excess beyond two standard errors.
    pub non_additive: bool,
    /// Models it occurs in.
    pub models: usize,
}

/// The pairs of one kind of neighbours.
#[derive(Debug, Clone, Serialize)]
pub struct KindRow {
    pub kinds: String,
    pub pairs: usize,
    pub median_ratio: f64,
    pub min_ratio: f64,
    pub max_ratio: f64,
    pub median_excess_ms: f64,
    pub non_additive: usize,
    /// Median ratio off 1 by more than 10% and at least half of its pairs non-additive.
    pub verdict_non_additive: bool,
}

/// A span of blocks (a part, or the whole chain) as one graph against its blocks alone, over the models.
#[derive(Debug, Clone, Serialize)]
pub struct SpanRow {
    pub span: String,
    pub models: usize,
    /// Median over the models of (span as one graph, net of dispatch) / (sum of its blocks alone).
    pub median_ratio: f64,
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// Median of (graph - sum of blocks), ms.
    pub median_excess_ms: f64,
}

/// One model's predictions against its measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub name: String,
    pub measured_ms: f64,
    /// Dispatch + the blocks alone.
    pub sum_ms: f64,
    /// The sum + the measured excess of each of its neighbouring pairs.
    pub in_context_ms: f64,
    /// The sum corrected by the median ratio of each pair's kinds over other models' pairs.
    pub by_kind_ms: f64,
    /// Dispatch + each span (part) timed as one graph.
    pub spans_ms: f64,
    /// The whole chain of blocks timed as one graph.
    pub chain_ms: f64,
}

/// A predictor's accuracy, raw and after a fitted `scale x prediction + offset` (as a table's correction).
#[derive(Debug, Clone, Serialize)]
pub struct PredictorScore {
    pub predictor: String,
    pub raw: Accuracy,
    pub correction: Correction,
    pub corrected: Accuracy,
}

/// The outcome of `latency additivity`.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub dispatch_ms: f64,
    pub pairs: Vec<PairRow>,
    pub kinds: Vec<KindRow>,
    pub spans: Vec<SpanRow>,
    pub models: Vec<ModelRow>,
    pub scores: Vec<PredictorScore>,
    pub sessions: Option<SessionSpread>,
}

/// One model's time across sessions: the floor under any prediction of what one session will take.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSpread {
    pub sessions: usize,
    pub min_ms: f64,
    pub max_ms: f64,
    /// (max - min) / median.
    pub range_pct: f64,
    /// Standard deviation / mean.
    pub cv_pct: f64,
}

impl SessionSpread {
    /// The spread of `ms` (`None` for fewer than two sessions).
    pub fn of(ms: &[f64]) -> Option<SessionSpread> {
        if ms.len() < 2 {
            return None;
        }
        let n = ms.len() as f64;
        let mean = ms.iter().sum::<f64>() / n;
        let sd = (ms.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let (min_ms, max_ms) = min_max(ms);
        Some(SessionSpread { sessions: ms.len(), min_ms, max_ms, range_pct: 100.0 * (max_ms - min_ms) / median(ms), cv_pct: 100.0 * sd / mean })
    }
}

/// The kind of a block in a pair: [`super::kinds::kind_of`] for searchable cells (`extractor/e6`), the path
/// for fixed blocks (`rectifier.fc`, `sequence.1`).
pub fn pair_kind(path: &str, key: &str) -> String {
    match super::kinds::kind_of(path, key).as_str() {
        "fixed" => path.to_string(),
        k => k.to_string(),
    }
}

/// The span a block is timed in beside its part's other blocks: its part, with the prediction head joining
/// the sequence model (a CTC head alone is one small layer).
pub fn span_of(part: crate::ops::Part) -> &'static str {
    match part {
        crate::ops::Part::Prediction => crate::ops::Part::Sequence.name(),
        p => p.name(),
    }
}

/// The name of the whole chain of blocks as a span.
pub const WHOLE_CHAIN: &str = "whole chain";

/// The key of a run of links (as [`build::chain_key`] of their nodes).
fn links_key(links: &[Link]) -> String {
    links.iter().map(|l| l.key.as_str()).collect::<Vec<_>>().join(" + ")
}

/// The spans of a chain: (name, start, length) of each part's run of blocks, then the whole chain.
pub fn spans(chain: &[Link]) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = vec![];
    for (i, l) in chain.iter().enumerate() {
        match out.last_mut() {
            Some(s) if s.0 == l.span => s.2 += 1,
            _ => out.push((l.span.clone(), i, 1)),
        }
    }
    out.push((WHOLE_CHAIN.into(), 0, chain.len()));
    out
}

fn is_identity(key: &str) -> bool {
    key.starts_with("identity-")
}

fn median(xs: &[f64]) -> f64 {
    crate::measure::median(xs)
}

/// Smallest and largest of `xs` (infinite for none).
fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// The pairs, kinds and predictions of `obs`. Errors when a model's block or pair was not measured.
pub fn analyse(obs: &Observations) -> Result<Analysis> {
    let d = obs.dispatch.ms;
    let get = |key: &str| obs.blocks.get(key).copied().with_context(|| format!("internal error: {key} was not measured"));
    let net = |key: &str| -> Result<f64> { Ok(get(key)?.ms - d) };
    let mut pairs: BTreeMap<String, PairRow> = BTreeMap::new();
    let mut model_pairs: Vec<BTreeSet<String>> = vec![];
    for m in &obs.models {
        let mut mine = BTreeSet::new();
        for w in m.chain.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let key = links_key(w);
            if !mine.insert(key.clone()) {
                continue;
            }
            if let Some(p) = pairs.get_mut(&key) {
                p.models += 1;
                continue;
            }
            let (ta, tb, tab) = (get(&a.key)?, get(&b.key)?, get(&key)?);
            let (a_ms, b_ms, pair_ms) = (ta.ms - d, tb.ms - d, tab.ms - d);
            let excess = pair_ms - a_ms - b_ms;
            let ratio = if a_ms + b_ms > 0.0 { pair_ms / (a_ms + b_ms) } else { f64::NAN };
            let sigma = [ta.sigma_ms, tb.sigma_ms, tab.sigma_ms, obs.dispatch.sigma_ms].iter().map(|s| s * s).sum::<f64>().sqrt();
            pairs.insert(
                key.clone(),
                PairRow {
                    first: a.path.clone(),
                    second: b.path.clone(),
                    kinds: format!("{} -> {}", pair_kind(&a.path, &a.key), pair_kind(&b.path, &b.key)),
                    key,
                    a_ms,
                    b_ms,
                    pair_ms,
                    excess_ms: excess,
                    ratio,
                    sigma_ms: sigma,
                    non_additive: (ratio - 1.0).abs() > 0.10 && excess.abs() > 2.0 * sigma,
                    models: 1,
                },
            );
        }
        model_pairs.push(mine);
    }
    let kinds = kind_rows(&pairs);
    let mut models = vec![];
    let mut span_points: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (m, mine) in obs.models.iter().zip(&model_pairs) {
        let sum = d + m.chain.iter().map(|l| net(&l.key)).sum::<Result<f64>>()?;
        let in_context = sum + mine.iter().map(|k| pairs[k].excess_ms).sum::<f64>();
        // Per-kind ratios from the pairs this model does not contain.
        let others: BTreeMap<String, PairRow> = pairs.iter().filter(|(k, _)| !mine.contains(*k)).map(|(k, p)| (k.clone(), p.clone())).collect();
        let held_out: BTreeMap<String, f64> = kind_rows(&others).into_iter().map(|k| (k.kinds, k.median_ratio)).collect();
        let by_kind = sum + mine.iter().map(|k| (held_out.get(&pairs[k].kinds).copied().unwrap_or(1.0) - 1.0) * (pairs[k].a_ms + pairs[k].b_ms)).sum::<f64>();
        let (mut spans_ms, mut chain_ms) = (d, d);
        for (name, start, len) in spans(&m.chain) {
            let links = &m.chain[start..start + len];
            let graph = net(&links_key(links))?;
            let alone = links.iter().map(|l| net(&l.key)).sum::<Result<f64>>()?;
            span_points.entry(name.clone()).or_default().push((graph, alone));
            if name == WHOLE_CHAIN {
                chain_ms += graph;
            } else {
                spans_ms += graph;
            }
        }
        models.push(ModelRow { name: m.name.clone(), measured_ms: m.ms, sum_ms: sum, in_context_ms: in_context, by_kind_ms: by_kind, spans_ms, chain_ms });
    }
    let spans = span_points
        .into_iter()
        .map(|(span, pts)| {
            let ratios: Vec<f64> = pts.iter().map(|(g, a)| g / a).collect();
            SpanRow {
                span,
                models: pts.len(),
                median_ratio: median(&ratios),
                min_ratio: min_max(&ratios).0,
                max_ratio: min_max(&ratios).1,
                median_excess_ms: median(&pts.iter().map(|(g, a)| g - a).collect::<Vec<_>>()),
            }
        })
        .collect();
    let score = |name: &str, f: &dyn Fn(&ModelRow) -> f64| {
        let points: Vec<(f64, f64)> = models.iter().map(|r| (f(r), r.measured_ms)).collect();
        let c = table::fit(&points);
        let corrected: Vec<(f64, f64)> = points.iter().map(|&(p, m)| (c.scale * p + c.offset_ms, m)).collect();
        PredictorScore { predictor: name.into(), raw: table::accuracy(&points), correction: c, corrected: table::accuracy(&corrected) }
    };
    let scores = vec![
        score("sum of blocks alone", &|r| r.sum_ms),
        score("sum + measured pair excess (in context)", &|r| r.in_context_ms),
        score("sum x held-out kind-pair ratios", &|r| r.by_kind_ms),
        score("sum of parts, each one graph", &|r| r.spans_ms),
        score("whole chain of blocks, one graph", &|r| r.chain_ms),
    ];
    Ok(Analysis { dispatch_ms: d, pairs: pairs.into_values().collect(), kinds, spans, models, scores, sessions: SessionSpread::of(&obs.sessions) })
}

/// Pairs grouped by their kinds, ratios that are not finite (two blocks of no net cost) left out.
fn kind_rows(pairs: &BTreeMap<String, PairRow>) -> Vec<KindRow> {
    let mut groups: BTreeMap<&str, Vec<&PairRow>> = BTreeMap::new();
    for p in pairs.values().filter(|p| p.ratio.is_finite()) {
        groups.entry(&p.kinds).or_default().push(p);
    }
    groups
        .into_iter()
        .map(|(kinds, ps)| {
            let ratios: Vec<f64> = ps.iter().map(|p| p.ratio).collect();
            let median_ratio = median(&ratios);
            let non_additive = ps.iter().filter(|p| p.non_additive).count();
            KindRow {
                kinds: kinds.to_string(),
                pairs: ps.len(),
                median_ratio,
                min_ratio: min_max(&ratios).0,
                max_ratio: min_max(&ratios).1,
                median_excess_ms: median(&ps.iter().map(|p| p.excess_ms).collect::<Vec<_>>()),
                non_additive,
                verdict_non_additive: (median_ratio - 1.0).abs() > 0.10 && 2 * non_additive >= ps.len(),
            }
        })
        .collect()
}

/// The blocks of `arch` that run, in order (identity cells left out).
fn chain(arch: &Arch) -> Vec<Node> {
    crate::ops::network(arch).into_iter().filter(|n| !is_identity(&n.layer.cost_key())).collect()
}

/// Measures `models` (architectures of `space`): the dispatch, every block of their chains alone, every
/// neighbouring pair and every span ([`spans`]) as one graph, each model whole, and the first model in
/// `sessions` sessions interleaved, all calibrated ([`build`]'s measurement). Resumable
/// through `resume` as `latency build` is; a finished run removes nothing (the caller does).
pub fn measure(space: &Space, models: &[Arch], sessions: usize, o: &Options, resume: &Path, progress: &mut dyn Progress) -> Result<Observations> {
    crate::signals::install_stop_handler();
    let chains: Vec<Vec<Node>> = models.iter().map(chain).collect();
    let links: Vec<Vec<Link>> = chains.iter().map(|c| c.iter().map(|n| Link { path: n.path.clone(), key: n.layer.cost_key(), span: span_of(n.part).into() }).collect()).collect();
    // Key -> (model, first index, length) of its first occurrence: singles, pairs, spans.
    let mut todo: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (m, c) in links.iter().enumerate() {
        for i in 0..c.len() {
            for len in 1..=2.min(c.len() - i) {
                todo.entry(links_key(&c[i..i + len])).or_insert((m, i, len));
            }
        }
        for (_, start, len) in spans(c) {
            todo.entry(links_key(&c[start..start + len])).or_insert((m, start, len));
        }
    }
    let settings = super::partial::settings(&format!("additivity sessions {sessions} "), space, o, models);
    let mut saved = Partial::load(resume, &settings, &mut |l| progress.note(l));
    let session_names: Vec<String> = (0..sessions).map(|i| format!("{} #session-{i}", models[0].name)).collect();
    let total = 1 + todo.len() + models.len() + sessions;
    let mut cal = build::calibration(o)?;
    if saved.dispatch.is_none() {
        saved.dispatch = Some(build::time_dispatch(space, o, &mut cal)?);
        saved.save(resume)?;
    }
    progress.start(todo.len() as u64, "blocks, pairs and spans");
    for (key, &(m, i, len)) in &todo {
        saved.checkpoint(resume, total)?;
        if !saved.blocks.contains_key(key) {
            let paths = &chains[m][i..i + len];
            progress.message(&match paths {
                [a] => a.path.clone(),
                [a, b] => format!("{} + {}", a.path, b.path),
                _ => format!("{} .. {} ({len} blocks)", paths[0].path, paths[len - 1].path),
            });
            let (t, _) = build::time_blocks(&chains[m][i..i + len], o, &mut cal)?;
            saved.blocks.insert(key.clone(), t);
            saved.save(resume)?;
        }
        progress.advance(1);
    }
    progress.finish();
    progress.start(models.len() as u64, "models");
    for a in models {
        saved.checkpoint(resume, total)?;
        if !saved.models.contains_key(&a.name) {
            progress.message(&a.name);
            let r = build::time_model(a, o, &mut cal)?.calibrated.ratio;
            saved.models.insert(a.name.clone(), r);
            saved.save(resume)?;
        }
        progress.advance(1);
    }
    progress.finish();
    if sessions > 0 && session_names.iter().any(|n| !saved.models.contains_key(n)) {
        saved.checkpoint(resume, total)?;
        let same: Vec<&Arch> = vec![&models[0]; sessions];
        let timed = build::time_models(&same, o, &mut cal, progress)?;
        for (n, t) in session_names.iter().zip(timed) {
            saved.models.insert(n.clone(), t.calibrated.ratio);
        }
        saved.save(resume)?;
    }
    let dispatch = saved.dispatch.clone().context("internal error: no dispatch measurement")?;
    let cal_ms = crate::measure::median(&saved.blocks.values().chain([&dispatch]).map(|t| t.calibrated.calibration_ms).collect::<Vec<_>>());
    let obs = |t: &build::Timed| Obs { ms: t.calibrated.ratio * cal_ms, sigma_ms: t.calibrated.noise * t.calibrated.ratio * cal_ms };
    Ok(Observations {
        engine: Some(cal.info().clone()),
        dispatch: obs(&dispatch),
        blocks: saved.blocks.iter().map(|(k, t)| (k.clone(), obs(t))).collect(),
        models: models.iter().zip(links).map(|(a, chain)| ModelObs { name: a.name.clone(), ms: saved.models[&a.name] * cal_ms, chain }).collect(),
        sessions: session_names.iter().map(|n| saved.models[n] * cal_ms).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(path: &str, key: &str) -> Link {
        Link { path: path.into(), key: key.into(), span: path.split('.').next().unwrap().into() }
    }

    #[test]
    fn analysis_of_constructed_measurements() {
        // Dispatch 0.1 ms; nets A 1, A2 1, B 2, C 0.5. A+B fuses (net 2.5 of 3: ratio 0.833), A2+B more
        // (net 2.4: ratio 0.8), B+C is additive (net 2.5).
        let (a, a2, b, c) = ("mb3x3-e3-input:a", "mb5x5-e3-input:a", "mb3x3-e6-input:b", "pool-input:c");
        let o = |ms: f64| Obs { ms, sigma_ms: 0.01 };
        let blocks: BTreeMap<String, Obs> = [
            (a.to_string(), o(1.1)),
            (a2.to_string(), o(1.1)),
            (b.to_string(), o(2.1)),
            (c.to_string(), o(0.6)),
            (format!("{a} + {b}"), o(2.6)),
            (format!("{a2} + {b}"), o(2.5)),
            (format!("{b} + {c}"), o(2.6)),
            // The extractor (here the whole chain too) as one graph: net 2.9 against 3.5 alone.
            (format!("{a} + {b} + {c}"), o(3.0)),
            (format!("{a2} + {b} + {c}"), o(3.0)),
        ]
        .into_iter()
        .collect();
        let chain = |first: &str| vec![link("extractor.cells.0", first), link("extractor.cells.1", b), link("extractor.pool", c)];
        let models = vec![ModelObs { name: "m1".into(), ms: 3.1, chain: chain(a) }, ModelObs { name: "m2".into(), ms: 3.0, chain: chain(a2) }];
        let r = analyse(&Observations { engine: None, dispatch: o(0.1), blocks, models, sessions: vec![] }).unwrap();
        let close = |x: f64, y: f64| (x - y).abs() < 1e-9;

        let ab = r.pairs.iter().find(|p| p.key == format!("{a} + {b}")).unwrap();
        assert!(close(ab.excess_ms, -0.5) && close(ab.ratio, 2.5 / 3.0) && ab.non_additive && ab.models == 1, "{ab:?}");
        assert!(close(ab.sigma_ms, 0.02) && ab.kinds == "extractor/e3 -> extractor/e6", "{ab:?}");
        let bc = r.pairs.iter().find(|p| p.key == format!("{b} + {c}")).unwrap();
        assert!(close(bc.excess_ms, 0.0) && !bc.non_additive && bc.models == 2 && bc.kinds == "extractor/e6 -> extractor.pool", "{bc:?}");

        let k = |name: &str| r.kinds.iter().find(|k| k.kinds == name).unwrap();
        // `measure::median` takes the upper of two middle values.
        let fused = k("extractor/e3 -> extractor/e6");
        assert!(fused.pairs == 2 && close(fused.median_ratio, 2.5 / 3.0) && fused.non_additive == 2 && fused.verdict_non_additive, "{fused:?}");
        assert!(!k("extractor/e6 -> extractor.pool").verdict_non_additive);

        // m1: sum 0.1 + 1 + 2 + 0.5 = 3.6; in context 3.6 - 0.5 = 3.1 (its measurement); by kind, m2's A2+B
        // ratio 0.8 on A+B's 3 ms: 3.6 - 0.6 = 3.0. m2: sum 3.6, in context 3.0, by kind (ratio 5/6) 3.1.
        let m1 = &r.models[0];
        assert!(close(m1.sum_ms, 3.6) && close(m1.in_context_ms, 3.1) && close(m1.by_kind_ms, 3.0), "{m1:?}");
        let m2 = &r.models[1];
        assert!(close(m2.sum_ms, 3.6) && close(m2.in_context_ms, 3.0) && close(m2.by_kind_ms, 3.1), "{m2:?}");
        assert!(close(r.scores[1].raw.mape_pct, 0.0) && close(r.scores[0].raw.within_10_pct, 0.0), "{:?}", r.scores);

        // One span (the extractor), also the whole chain: 3.0 ms each as one graph.
        assert!(close(m1.spans_ms, 3.0) && close(m1.chain_ms, 3.0) && close(m2.spans_ms, 3.0), "{m1:?} {m2:?}");
        let names: Vec<&str> = r.spans.iter().map(|s| s.span.as_str()).collect();
        assert_eq!(names, ["extractor", WHOLE_CHAIN]);
        assert!(r.spans.iter().all(|s| s.models == 2 && close(s.median_ratio, 2.9 / 3.5) && close(s.median_excess_ms, -0.6)), "{:?}", r.spans);
    }

    #[test]
    fn session_spread() {
        // Mean 2.1, sd sqrt(((-.1)^2 + .1^2 + 0 + 0) / 3), median 2.1.
        let s = SessionSpread::of(&[2.0, 2.2, 2.1, 2.1]).unwrap();
        assert!((s.range_pct - 100.0 * 0.2 / 2.1).abs() < 1e-9 && (s.cv_pct - 100.0 * (0.02f64 / 3.0).sqrt() / 2.1).abs() < 1e-9, "{s:?}");
        assert!(SessionSpread::of(&[1.0]).is_none());
    }

    #[test]
    fn spans_follow_the_parts_then_the_whole_chain() {
        let chain = [link("rectifier.stem", "s"), link("rectifier.fc", "f"), link("extractor.stem", "e"), link("sequence.0", "q")];
        let got = spans(&chain);
        let want: Vec<(String, usize, usize)> = vec![("rectifier".into(), 0, 2), ("extractor".into(), 2, 1), ("sequence".into(), 3, 1), (WHOLE_CHAIN.into(), 0, 4)];
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_measurement_is_an_error() {
        let obs = Observations {
            engine: None,
            dispatch: Obs { ms: 0.1, sigma_ms: 0.0 },
            blocks: BTreeMap::new(),
            models: vec![ModelObs { name: "m".into(), ms: 1.0, chain: vec![link("extractor.stem", "conv-a"), link("extractor.pool", "pool-b")] }],
            sessions: vec![],
        };
        let e = analyse(&obs).unwrap_err().to_string();
        assert!(e.contains("conv-a") && e.contains("not measured"), "{e}");
    }
}
