//! What an evaluation returns, whichever engine scored it (the tch network or an exported ONNX model): the
//! [`EvalResult`] `--json` writes, the wrong predictions asked for, and the datasets' unreadable images.

use super::metrics::Score;
use super::result::{DatasetResult, EvalResult};
use crate::data::loader::Dataset;

/// A wrong prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Misread {
    /// The dataset's name.
    pub dataset: String,
    /// Ground truth (normalised as scored).
    pub label: String,
    pub prediction: String,
    /// The reference's confidence score of the prediction.
    pub confidence: f32,
}

/// An evaluation: the result `--json` writes, and the wrong predictions asked for.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub result: EvalResult,
    /// Up to `show_errors` per dataset, datasets in order.
    pub misreads: Vec<Misread>,
    /// One line per dataset with images that could not be read or decoded (left out of the scores).
    pub unreadable: Vec<String>,
}

/// Per-dataset results and their pool (`total`), from one [`Score`] per dataset in order.
pub fn dataset_results(datasets: &[Dataset], scores: &[Score]) -> (Vec<DatasetResult>, DatasetResult) {
    let row = |name: String, path: String, s: &Score, filtered: usize, unreadable: usize| DatasetResult {
        name,
        path,
        samples: s.samples,
        filtered,
        unreadable,
        accuracy: s.accuracy(),
        norm_ed: s.norm_ed(),
    };
    let mut total = Score::default();
    scores.iter().for_each(|s| total.merge(s));
    let per = datasets.iter().zip(scores).map(|(d, s)| row(d.name(), d.path().display().to_string(), s, d.filtered, d.bad_images().len())).collect();
    let pooled = row("total".into(), String::new(), &total, datasets.iter().map(|d| d.filtered).sum(), datasets.iter().map(|d| d.bad_images().len()).sum());
    (per, pooled)
}
