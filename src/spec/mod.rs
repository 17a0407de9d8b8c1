//! The YAML architecture spec: the contract between search, training, export and bench.
//!
//! - [`file`]: the serde form (`version: 1`, unknown fields rejected).
//! - [`arch`]: validation into an [`Arch`] with every shape inferred.
//! - [`emit`]: canonical YAML text; [`plans`]: the paper's space at paper and tiny scale.
//!
//! The contract layer: depends only on the foundation modules; everything else may depend on it.

pub mod arch;
pub mod charset;
pub mod emit;
pub mod file;
pub mod plans;
pub mod tps;

use std::fmt;
use std::path::{Path, PathBuf};

pub use arch::{resolve, Arch, Cell, CellRole, Op, Shape, SpecError};
pub use charset::Charset;
pub use file::SpecFile;

/// Why a spec file could not be used.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read (exit code 2).
    Io { path: PathBuf, error: std::io::Error },
    /// The file was read but is not a valid spec: YAML syntax, types, unknown fields, or semantic checks.
    Invalid { path: PathBuf, errors: Vec<SpecError> },
}

impl LoadError {
    /// True when the content is at fault (a failed check), false for I/O errors.
    pub fn is_invalid(&self) -> bool {
        matches!(self, LoadError::Invalid { .. })
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, error } => write!(f, "{}: cannot read: {error}", path.display()),
            LoadError::Invalid { path, errors } => {
                let n = errors.len();
                write!(f, "{}: invalid spec ({n} error{})", path.display(), if n == 1 { "" } else { "s" })?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// Parses YAML text into a [`SpecFile`]; errors carry the YAML path serde reports.
pub fn parse(text: &str) -> Result<SpecFile, Vec<SpecError>> {
    // Check the version first, so a file from a newer strnas says so instead of listing unknown fields.
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| vec![SpecError { path: String::new(), message: format!("YAML: {e}") }])?;
    if !value.is_mapping() {
        return Err(vec![SpecError { path: String::new(), message: "a spec is a YAML mapping (version, name, input, ...)".into() }]);
    }
    match value.get("version") {
        None => return Err(vec![SpecError { path: "version".into(), message: format!("missing (write `version: {}`)", file::SPEC_VERSION) }]),
        Some(v) if v.as_u64() != Some(file::SPEC_VERSION as u64) => {
            return Err(vec![SpecError {
                path: "version".into(),
                message: format!(
                    "unsupported spec version {} (this strnas reads version {})",
                    serde_yaml::to_string(v).unwrap_or_default().trim(),
                    file::SPEC_VERSION
                ),
            }])
        }
        Some(_) => {}
    }
    // Parse the text again (not the Value) so errors carry their YAML path and line.
    serde_yaml::from_str(text).map_err(|e| {
        // serde_yaml prefixes the path ("extractor.cells[3]: unknown field ..."); keep it as the path.
        let msg = e.to_string();
        match msg.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => vec![SpecError { path: path.to_string(), message: rest.to_string() }],
            _ => vec![SpecError { path: String::new(), message: msg }],
        }
    })
}

/// Parses and validates YAML text.
pub fn from_str(text: &str) -> Result<Arch, Vec<SpecError>> {
    resolve(&parse(text)?)
}

/// Reads, parses and validates a spec file.
pub fn load(path: &Path) -> Result<Arch, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io { path: path.to_path_buf(), error })?;
    from_str(&text).map_err(|errors| LoadError::Invalid { path: path.to_path_buf(), errors })
}

/// SHA-256 (hex) of the architecture: the spec's canonical JSON without name, description and reference
/// figures, so two files describing the same network hash alike.
pub fn arch_hash(spec: &SpecFile) -> String {
    use sha2::{Digest, Sha256};
    let mut s = spec.clone();
    s.name = String::new();
    s.description = None;
    s.reference = None;
    let bytes = serde_json::to_vec(&s).expect("specs serialise to JSON");
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Expands files and directories (recursively, `*.yaml`/`*.yml`) into a sorted list of spec files.
pub fn expand_paths(inputs: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = vec![];
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}
