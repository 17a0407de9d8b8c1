//! The sweep plan as written in YAML (`version: 1`), its validation, and its expansion into numbered jobs.
//!
//! A plan is a list of named stages; each stage is one strnas command over a grid (the cartesian product of
//! its axes, the last axis varying fastest), with `needs:` naming earlier stages that must be done before any
//! of its jobs starts. Commands, result paths, inputs and `resume.when` are templates: `{root}` (the sweep's
//! root, absolute), `{index}`, `{stage}`, `{threads}`, the plan's `vars`, and each grid axis (`{spec}`, or a
//! field: `{spec.stem}`, `{spec.name}`, `{split.count}` for an axis of maps). A list var spliced as a whole
//! argument (`"{recipe}"`) contributes all its items. A var's text may use the built-ins, the grid axes and
//! vars whose own text names no var; a grid value's the built-ins and vars (`{root}/search/arch.yaml`). `{{` and `}}` are literal braces.
//!
//! Errors name the plan file and the YAML path of the offending value (`stages[2].command[4]`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The only plan version this build reads.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub version: u32,
    /// File-name-safe sweep name.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Plan-wide values: a string, or a list of strings spliced where a command argument is exactly `{name}`;
    /// an empty value (`name:`) must be given with `--set`.
    /// Their text may use the built-in variables, the stage's grid axes and vars that name no var themselves.
    #[serde(default)]
    pub vars: serde_yaml::Mapping,
    pub stages: Vec<StageFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    /// `[a-z0-9-]+`, unique in the plan.
    pub name: String,
    /// Stages (declared earlier) every job of which must be done before this stage starts.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Axis name -> a list of values (scalars, or maps of scalars), `{folder: DIR}` (its `*.yaml` files,
    /// sorted; `pattern: "*.onnx"` for another suffix), or `{range: N}` (0..N-1).
    #[serde(default)]
    pub grid: serde_yaml::Mapping,
    /// The strnas command line without the program name, e.g. `[train, "{spec}", --out, "{root}/runs/x"]`.
    pub command: Vec<String>,
    /// The file whose existence marks a job done (written by the command; a job that exits 0 without it failed).
    pub result: String,
    /// Files that must exist before a job starts (typically outputs of the stages in `needs`).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Arguments added when a file exists: `{when: "{root}/runs/x/checkpoint.safetensors", add: [--resume]}`.
    #[serde(default)]
    pub resume: Option<ResumeFile>,
    /// CPU threads one job uses (substituted for `{threads}`; the scheduler's CPU request). Default 1.
    #[serde(default = "one")]
    pub threads: u32,
    /// The stage measures latency (bench, latency build): on a scheduler it runs only on a named partition.
    #[serde(default)]
    pub latency: bool,
    /// The stage needs a GPU (a scheduler requests one per job).
    #[serde(default)]
    pub gpu: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeFile {
    pub when: String,
    pub add: Vec<String>,
}

/// A stage of an expanded plan (what the manifest records beside its jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub needs: Vec<String>,
    pub jobs: usize,
    pub threads: u32,
    pub latency: bool,
    pub gpu: bool,
}

/// One job: a resolved command line and the files that decide its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub stage: String,
    pub index: usize,
    /// The grid values of this job (axis -> value; a map value's fields as `axis.field`).
    pub vars: BTreeMap<String, String>,
    pub command: Vec<String>,
    pub result: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// (file, extra arguments): the arguments are added when the file exists at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<(PathBuf, Vec<String>)>,
    pub threads: u32,
}

/// A validated, expanded plan.
#[derive(Debug, Clone)]
pub struct Expanded {
    pub name: String,
    pub stages: Vec<Stage>,
    pub jobs: Vec<Job>,
}

/// Reads, validates and expands a plan file for a sweep rooted at `root` (made absolute); `sets` replace plan
/// vars (`--set iters=30`: a budget cut, a different space), each of which must exist in the plan.
pub fn load(path: &Path, root: &Path, sets: &[(String, String)]) -> Result<Expanded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading sweep plan {}", path.display()))?;
    let mut file: PlanFile = serde_yaml::from_str(&text).with_context(|| format!("{}: not a valid sweep plan", path.display()))?;
    for (k, v) in sets {
        let key = serde_yaml::Value::String(k.clone());
        let Some(slot) = file.vars.get_mut(&key) else {
            let known: Vec<&str> = file.vars.keys().filter_map(|k| k.as_str()).collect();
            bail!("--set {k}={v}: the plan {} has no var {k:?} (vars: {})", path.display(), if known.is_empty() { "none".into() } else { known.join(", ") });
        };
        *slot = match slot {
            serde_yaml::Value::Sequence(_) => serde_yaml::Value::Sequence(v.split_whitespace().map(|w| serde_yaml::Value::String(w.into())).collect()),
            _ => serde_yaml::Value::String(v.clone()),
        };
    }
    expand(&file, root).with_context(|| format!("sweep plan {}", path.display()))
}

/// Validates `file` and expands every stage's grid into jobs.
pub fn expand(file: &PlanFile, root: &Path) -> Result<Expanded> {
    if file.version != PLAN_VERSION {
        bail!("version: {} is not supported (this build reads version {PLAN_VERSION})", file.version);
    }
    if file.name.is_empty() || !file.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        bail!("name: {:?} must be non-empty and use only [A-Za-z0-9._-]", file.name);
    }
    if file.stages.is_empty() {
        bail!("stages: a plan needs at least one stage");
    }
    let root_str = root.to_str().with_context(|| format!("the sweep root {} is not UTF-8", root.display()))?.to_string();
    let vars = plan_vars(&file.vars)?;
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let (mut stages, mut jobs) = (vec![], vec![]);
    for (si, st) in file.stages.iter().enumerate() {
        let at = format!("stages[{si}]");
        if st.name.is_empty() || !st.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            bail!("{at}.name: {:?} must be non-empty and use only [a-z0-9-]", st.name);
        }
        for (ni, n) in st.needs.iter().enumerate() {
            if !seen.contains(n.as_str()) {
                bail!("{at}.needs[{ni}]: {n:?} is not a stage declared before {:?} (declared: {})", st.name, list(&seen));
            }
        }
        if !seen.insert(&st.name) {
            bail!("{at}.name: stage {:?} is declared twice", st.name);
        }
        if st.command.is_empty() {
            bail!("{at}.command: empty (write the strnas command without the program name, e.g. [train, \"{{spec}}\"])");
        }
        if st.threads == 0 {
            bail!("{at}.threads: must be at least 1");
        }
        let axes = grid_axes(&st.grid, &at)?;
        let points = product(&axes);
        for (index, point) in points.iter().enumerate() {
            let mut env = Env { builtins: BTreeMap::new(), vars: &vars, point, depth: 0 };
            env.builtins.insert("root", root_str.clone());
            env.builtins.insert("index", index.to_string());
            env.builtins.insert("stage", st.name.clone());
            env.builtins.insert("threads", st.threads.to_string());
            jobs.push(resolve_job(st, &at, index, &env)?);
        }
        stages.push(Stage { name: st.name.clone(), needs: st.needs.clone(), jobs: points.len(), threads: st.threads, latency: st.latency, gpu: st.gpu });
    }
    Ok(Expanded { name: file.name.clone(), stages, jobs })
}

fn resolve_job(st: &StageFile, at: &str, index: usize, env: &Env) -> Result<Job> {
    let mut command = vec![];
    for (i, arg) in st.command.iter().enumerate() {
        command.extend(env.args(arg).with_context(|| format!("{at}.command[{i}]: {arg:?}"))?);
    }
    let one = |t: &str, field: String| -> Result<PathBuf> { Ok(PathBuf::from(env.string(t).with_context(|| format!("{at}.{field}: {t:?}"))?)) };
    let inputs = st.inputs.iter().enumerate().map(|(i, t)| one(t, format!("inputs[{i}]"))).collect::<Result<_>>()?;
    let resume = match &st.resume {
        None => None,
        Some(r) => {
            let mut add = vec![];
            for (i, a) in r.add.iter().enumerate() {
                add.extend(env.args(a).with_context(|| format!("{at}.resume.add[{i}]: {a:?}"))?);
            }
            Some((one(&r.when, "resume.when".into())?, add))
        }
    };
    let mut vars = BTreeMap::new();
    for (axis, value) in env.point {
        match value {
            Value::Scalar(s) => {
                vars.insert(axis.clone(), env.value_text(s).with_context(|| format!("{at}.grid.{axis}"))?);
            }
            Value::Fields(m) => {
                for (k, v) in m {
                    vars.insert(format!("{axis}.{k}"), env.value_text(v).with_context(|| format!("{at}.grid.{axis}.{k}"))?);
                }
            }
        }
    }
    Ok(Job { stage: st.name.clone(), index, vars, command, result: one(&st.result, "result".into())?, inputs, resume, threads: st.threads })
}

fn list(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.iter().copied().collect::<Vec<_>>().join(", ")
    }
}

/// A plan var: one string, or a list spliced as arguments.
#[derive(Debug, Clone)]
enum Var {
    One(String),
    Many(Vec<String>),
}

fn plan_vars(m: &serde_yaml::Mapping) -> Result<BTreeMap<String, Var>> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let name = k.as_str().with_context(|| format!("vars: key {k:?} is not a string"))?;
        if BUILTINS.contains(&name) {
            bail!("vars.{name}: {name:?} is a built-in variable ({})", BUILTINS.join(", "));
        }
        let var = match v {
            serde_yaml::Value::Null => bail!("vars.{name}: this plan needs a value: --set {name}=VALUE"),
            serde_yaml::Value::Sequence(items) => Var::Many(
                items.iter().enumerate().map(|(i, x)| scalar(x).with_context(|| format!("vars.{name}[{i}]"))).collect::<Result<_>>()?,
            ),
            x => Var::One(scalar(x).with_context(|| format!("vars.{name}"))?),
        };
        out.insert(name.to_string(), var);
    }
    Ok(out)
}

const BUILTINS: [&str; 4] = ["root", "index", "stage", "threads"];

fn scalar(v: &serde_yaml::Value) -> Result<String> {
    Ok(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        other => bail!("expected a string or a number, found {}", kind(other)),
    })
}

fn kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a map",
        serde_yaml::Value::Tagged(_) => "a tagged value",
        _ => "a scalar",
    }
}

/// One value of a grid axis.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Scalar(String),
    Fields(BTreeMap<String, String>),
}

fn grid_axes(grid: &serde_yaml::Mapping, at: &str) -> Result<Vec<(String, Vec<Value>)>> {
    let mut axes = vec![];
    for (k, v) in grid {
        let axis = k.as_str().with_context(|| format!("{at}.grid: key {k:?} is not a string"))?.to_string();
        let here = format!("{at}.grid.{axis}");
        if BUILTINS.contains(&axis.as_str()) {
            bail!("{here}: {axis:?} is a built-in variable ({})", BUILTINS.join(", "));
        }
        let values = match v {
            serde_yaml::Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    serde_yaml::Value::Mapping(m) => {
                        let mut f = BTreeMap::new();
                        for (fk, fv) in m {
                            let name = fk.as_str().with_context(|| format!("{here}[{i}]: key {fk:?} is not a string"))?;
                            f.insert(name.to_string(), scalar(fv).with_context(|| format!("{here}[{i}].{name}"))?);
                        }
                        Ok(Value::Fields(f))
                    }
                    x => Ok(Value::Scalar(scalar(x).with_context(|| format!("{here}[{i}]"))?)),
                })
                .collect::<Result<Vec<_>>>()?,
            serde_yaml::Value::Mapping(m) => generated(m, &here)?,
            other => bail!("{here}: expected a list of values, {{folder: DIR}} or {{range: N}}, found {}", kind(other)),
        };
        if values.is_empty() {
            bail!("{here}: the axis has no values (a grid with an empty axis has no jobs)");
        }
        axes.push((axis, values));
    }
    Ok(axes)
}

/// `{folder: DIR[, pattern: "*.yaml"]}` or `{range: N}`.
fn generated(m: &serde_yaml::Mapping, here: &str) -> Result<Vec<Value>> {
    let get = |k: &str| m.get(serde_yaml::Value::String(k.into()));
    for k in m.keys() {
        let k = k.as_str().unwrap_or("?");
        if !["folder", "pattern", "range"].contains(&k) {
            bail!("{here}.{k}: unknown key (expected folder [with pattern] or range)");
        }
    }
    if let Some(n) = get("range") {
        let n = n.as_u64().with_context(|| format!("{here}.range: expected a whole number"))?;
        return Ok((0..n).map(|i| Value::Scalar(i.to_string())).collect());
    }
    let dir = get("folder").and_then(|v| v.as_str()).with_context(|| format!("{here}: expected folder: DIR or range: N"))?;
    let pattern = get("pattern").map(|p| p.as_str().with_context(|| format!("{here}.pattern: expected a string"))).transpose()?.unwrap_or("*.yaml");
    let suffix = pattern.strip_prefix('*').filter(|s| !s.contains('*')).with_context(|| format!("{here}.pattern: {pattern:?}: only \"*SUFFIX\" patterns are supported"))?;
    let entries = std::fs::read_dir(dir).with_context(|| format!("{here}.folder: reading {dir}"))?;
    let mut files: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{here}.folder: {dir} holds no {pattern} file");
    }
    Ok(files.into_iter().map(Value::Scalar).collect())
}

/// The cartesian product of the axes, the last varying fastest; one empty point for no axes.
fn product(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut points: Vec<Vec<(String, Value)>> = vec![vec![]];
    for (name, values) in axes {
        points = points.iter().flat_map(|p| values.iter().map(move |v| { let mut q = p.clone(); q.push((name.clone(), v.clone())); q })).collect();
    }
    points
}

struct Env<'a> {
    builtins: BTreeMap<&'static str, String>,
    vars: &'a BTreeMap<String, Var>,
    point: &'a [(String, Value)],
    /// 0 in a command; 1 in a var's text (which may name other vars); 2 in that var's text (which may not).
    depth: u8,
}

impl Env<'_> {
    /// A whole argument: a lone `{list}` splices the list; anything else is one string.
    fn args(&self, t: &str) -> Result<Vec<String>> {
        if let Some(name) = t.strip_prefix('{').and_then(|r| r.strip_suffix('}')).filter(|n| !n.contains(['{', '}'])) {
            if let Some(Var::Many(items)) = self.vars.get(name) {
                return items.iter().map(|i| self.without_vars().string(i).with_context(|| format!("var {name}: {i:?}"))).collect();
            }
        }
        Ok(vec![self.string(t)?])
    }

    /// The environment a var's own text is expanded in: one level deeper (vars name vars one level deep).
    fn without_vars(&self) -> Env<'_> {
        Env { builtins: self.builtins.clone(), vars: self.vars, point: self.point, depth: self.depth + 1 }
    }

    /// A grid value's text: it may use the built-in variables (`{root}`) and vars, not grid axes.
    fn value_text(&self, t: &str) -> Result<String> {
        Env { builtins: self.builtins.clone(), vars: self.vars, point: &[], depth: 1 }.string(t).with_context(|| format!("grid value {t:?}"))
    }

    fn string(&self, t: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = t;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let r = &rest[i..];
            if let Some(r) = r.strip_prefix("{{") {
                out.push('{');
                rest = r;
            } else if let Some(r) = r.strip_prefix("}}") {
                out.push('}');
                rest = r;
            } else if let Some(r) = r.strip_prefix('{') {
                let end = r.find('}').with_context(|| "a '{' without its '}' (write {{ for a literal brace)")?;
                out.push_str(&self.lookup(&r[..end])?);
                rest = &r[end + 1..];
            } else {
                bail!("a '}}' without its '{{' (write }}}} for a literal brace)");
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Result<String> {
        let (base, field) = name.split_once('.').map_or((name, None), |(b, f)| (b, Some(f)));
        if let Some(v) = self.builtins.get(base).filter(|_| field.is_none()) {
            return Ok(v.clone());
        }
        if let Some((_, v)) = self.point.iter().find(|(a, _)| a == base) {
            return match (v, field) {
                (Value::Scalar(s), None) => self.value_text(s),
                (Value::Scalar(s), Some(f)) => path_field(&self.value_text(s)?, f).with_context(|| format!("{{{name}}}: unknown field {f:?} (a value has stem, name and parent)")),
                (Value::Fields(m), Some(f)) => self.value_text(m.get(f).with_context(|| format!("{{{name}}}: no field {f:?} (fields: {})", m.keys().cloned().collect::<Vec<_>>().join(", ")))?),
                (Value::Fields(m), None) => bail!("{{{name}}}: the axis holds maps; name a field ({})", m.keys().map(|k| format!("{{{base}.{k}}}")).collect::<Vec<_>>().join(", ")),
            };
        }
        match self.vars.get(base).filter(|_| self.depth < 2) {
            Some(Var::One(s)) if field.is_none() => return self.without_vars().string(s).with_context(|| format!("var {base}: {s:?}")),
            Some(Var::Many(_)) => bail!("{{{name}}}: a list var can only be a whole argument"),
            _ => {}
        }
        let mut known: Vec<String> = BUILTINS.iter().map(|s| s.to_string()).collect();
        known.extend(self.point.iter().map(|(a, _)| a.clone()));
        if self.depth < 2 {
            known.extend(self.vars.keys().cloned());
        }
        bail!("{{{name}}}: unknown variable (known: {})", known.join(", "))
    }
}

fn path_field(s: &str, f: &str) -> Option<String> {
    let p = Path::new(s);
    let text = |o: Option<&std::ffi::OsStr>| o.map(|x| x.to_string_lossy().into_owned()).unwrap_or_default();
    match f {
        "stem" => Some(text(p.file_stem())),
        "name" => Some(text(p.file_name())),
        "parent" => Some(p.parent().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Result<Expanded> {
        let file: PlanFile = serde_yaml::from_str(yaml).map_err(anyhow::Error::from)?;
        expand(&file, Path::new("/sweep"))
    }

    #[test]
    fn grids_expand_last_axis_fastest_with_fields_and_splices() {
        let e = plan(
            "version: 1\nname: t\nvars: {recipe: [--lr, '4e-3'], iters: 30}\nstages:\n- name: data\n  grid:\n    split: [{name: train, count: 100}, {name: valid, count: 10}]\n  command: [dataset, synth, -o, '{root}/{split.name}', --count, '{split.count}']\n  result: '{root}/{split.name}/data.mdb'\n- name: train\n  needs: [data]\n  threads: 2\n  grid: {spec: [a/x.yaml, b/y.yaml], seed: [1, 2, 3]}\n  command: [train, '{spec}', '{recipe}', --iters, '{iters}', --seed, '{seed}', --threads, '{threads}', --out, '{root}/runs/{spec.stem}-s{seed}']\n  result: '{root}/runs/{spec.stem}-s{seed}/model.yaml'\n  resume: {when: '{root}/runs/{spec.stem}-s{seed}/checkpoint.safetensors', add: [--resume]}\n",
        )
        .unwrap();
        assert_eq!(e.stages.iter().map(|s| (s.name.as_str(), s.jobs)).collect::<Vec<_>>(), [("data", 2), ("train", 6)]);
        let data1 = &e.jobs[1];
        assert_eq!(data1.command, ["dataset", "synth", "-o", "/sweep/valid", "--count", "10"]);
        assert_eq!(data1.vars.get("split.count").map(String::as_str), Some("10"));
        let t = e.jobs.iter().filter(|j| j.stage == "train").collect::<Vec<_>>();
        assert_eq!((t[1].vars["spec"].as_str(), t[1].vars["seed"].as_str()), ("a/x.yaml", "2"), "last axis fastest");
        assert_eq!(t[3].command, ["train", "b/y.yaml", "--lr", "4e-3", "--iters", "30", "--seed", "1", "--threads", "2", "--out", "/sweep/runs/y-s1"]);
        assert_eq!(t[3].result, PathBuf::from("/sweep/runs/y-s1/model.yaml"));
        assert_eq!(t[3].resume, Some((PathBuf::from("/sweep/runs/y-s1/checkpoint.safetensors"), vec!["--resume".to_string()])));
        assert_eq!(t[3].index, 3);
    }

    #[test]
    fn errors_name_the_yaml_path() {
        let base = "version: 1\nname: t\nstages:\n- name: a\n  command: [spec, validate]\n  result: r\n";
        let cases = [
            (format!("{base}- name: b\n  needs: [c]\n  command: [x]\n  result: r\n"), "stages[1].needs[0]: \"c\" is not a stage declared before \"b\""),
            (format!("{base}- name: b\n  command: [train, '{{sped}}']\n  grid: {{spec: [x]}}\n  result: r\n"), "stages[1].command[1]: \"{sped}\": {sped}: unknown variable (known: root, index, stage, threads, spec)"),
            (format!("{base}- name: a\n  command: [x]\n  result: r\n"), "stages[1].name: stage \"a\" is declared twice"),
            (format!("{base}- name: b\n  grid: {{seed: []}}\n  command: [x]\n  result: r\n"), "stages[1].grid.seed: the axis has no values"),
            (format!("{base}- name: b\n  grid: {{seed: {{range: 2, step: 1}}}}\n  command: [x]\n  result: r\n"), "stages[1].grid.seed.step: unknown key"),
            (format!("{base}- name: b\n  grid: {{s: [{{a: 1}}]}}\n  command: ['{{s}}']\n  result: r\n"), "stages[1].command[0]: \"{s}\": {s}: the axis holds maps; name a field ({s.a})"),
            (format!("{base}- name: b\n  command: ['{{root']\n  result: r\n"), "stages[1].command[0]: \"{root\": a '{' without its '}'"),
            (base.replace("version: 1", "version: 2"), "version: 2 is not supported"),
        ];
        for (yaml, want) in cases {
            let err = format!("{:#}", plan(&yaml).unwrap_err());
            assert!(err.starts_with(want), "got {err:?}, want it to start with {want:?}");
        }
        let unknown = format!("{:#}", plan(&format!("{base}  comand: [x]\n")).unwrap_err());
        assert!(unknown.contains("stages[0]: unknown field `comand`"), "{unknown}");
    }

    #[test]
    fn folders_expand_sorted_and_ranges_count() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.yaml", "a.yaml", "c.txt"] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        let e = plan(&format!(
            "version: 1\nname: t\nstages:\n- name: s\n  grid: {{spec: {{folder: {}}}, k: {{range: 2}}}}\n  command: ['{{spec.name}}', '{{k}}', '{{{{x}}}}']\n  result: r\n",
            dir.path().display()
        ))
        .unwrap();
        let cmds: Vec<String> = e.jobs.iter().map(|j| j.command.join(" ")).collect();
        assert_eq!(cmds, ["a.yaml 0 {x}", "a.yaml 1 {x}", "b.yaml 0 {x}", "b.yaml 1 {x}"]);
    }
}
