//! `collect`: every done job's result gathered per stage, from the files alone. A JSON result is flattened into
//! columns (`total.accuracy`, `datasets.svt.accuracy`: arrays of objects are keyed by their `name`); the
//! table keeps the grid values and the numeric columns (those that differ between the stage's jobs when there
//! are more than fit).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::state::{self, Outcome};
use super::Sweep;

/// One done job's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub index: usize,
    pub vars: BTreeMap<String, String>,
    pub result: PathBuf,
    /// Seconds the last attempt ran (absent when the result predates the sweep's record).
    pub seconds: Option<f64>,
    /// The result's numeric and text leaves, flattened (empty for a result that is not JSON).
    pub values: BTreeMap<String, serde_json::Value>,
}

/// A stage's gathered results.
#[derive(Debug, Clone, Serialize)]
pub struct StageRows {
    pub stage: String,
    pub jobs: usize,
    pub rows: Vec<Row>,
}

pub fn collect(sweep: &Sweep) -> Result<Vec<StageRows>> {
    let mut out = vec![];
    for st in &sweep.stages {
        let mut rows = vec![];
        for job in sweep.jobs_of(&st.name) {
            if !state::is_done(sweep, job) {
                continue;
            }
            let path = state::result_path(sweep, job);
            let mut values = BTreeMap::new();
            if path.extension().is_some_and(|e| e == "json") {
                if let Ok(v) = std::fs::read_to_string(&path).map_err(anyhow::Error::from).and_then(|t| Ok(serde_json::from_str::<serde_json::Value>(&t)?)) {
                    flatten("", &v, &mut values);
                }
            }
            let seconds = state::read_record(sweep, job)?.filter(|r| r.outcome == Outcome::Done).map(|r| r.finished - r.started);
            rows.push(Row { index: job.index, vars: job.vars.clone(), result: path, seconds, values });
        }
        out.push(StageRows { stage: st.name.clone(), jobs: st.jobs, rows });
    }
    Ok(out)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| flatten(&key(k), x, out)),
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                let name = x.get("name").and_then(|n| n.as_str()).map_or(i.to_string(), str::to_string);
                flatten(&key(&name), x, out);
            }
        }
        serde_json::Value::Number(_) | serde_json::Value::String(_) | serde_json::Value::Bool(_) => {
            out.insert(prefix.to_string(), v.clone());
        }
        serde_json::Value::Null => {}
    }
}

impl StageRows {
    /// Grid columns, then `seconds`, then the numeric result columns: all of them when they are at most
    /// `max_values`, else the first `max_values` whose values differ between rows.
    pub fn table(&self, max_values: usize) -> crate::report::Table {
        let grid: Vec<String> = self.rows.first().map(|r| r.vars.keys().cloned().collect()).unwrap_or_default();
        let mut numeric: Vec<String> = vec![];
        for r in &self.rows {
            for (k, v) in &r.values {
                if v.is_number() && !numeric.contains(k) {
                    numeric.push(k.clone());
                }
            }
        }
        let varies = |k: &String| self.rows.iter().any(|r| r.values.get(k) != self.rows[0].values.get(k));
        let cols: Vec<String> = if numeric.len() <= max_values { numeric } else { numeric.into_iter().filter(varies).take(max_values).collect() };
        let mut header = vec!["index".to_string()];
        header.extend(grid.iter().cloned());
        header.push("seconds".into());
        header.extend(cols.iter().cloned());
        let mut t = crate::report::Table::new(header);
        for r in &self.rows {
            let mut cells = vec![r.index.to_string()];
            cells.extend(grid.iter().map(|g| r.vars.get(g).cloned().unwrap_or_default()));
            cells.push(r.seconds.map_or("-".into(), |s| format!("{s:.1}")));
            cells.extend(cols.iter().map(|c| r.values.get(c).and_then(|v| v.as_f64()).map_or("-".into(), fmt)));
            t.row(cells);
        }
        t
    }
}

fn fmt(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arrays_of_named_objects_flatten_by_name() {
        let v = serde_json::json!({"model": "m", "total": {"accuracy": 61.5}, "datasets": [{"name": "svt", "accuracy": 10.0}, {"accuracy": 2}], "x": null});
        let mut out = std::collections::BTreeMap::new();
        super::flatten("", &v, &mut out);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["datasets.1.accuracy", "datasets.svt.accuracy", "datasets.svt.name", "model", "total.accuracy"]);
    }
}
