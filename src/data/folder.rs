//! Image-folder datasets: a folder of word images plus `gt.txt` with one `relative/path<TAB>label` line per
//! image, the input of `create_lmdb_dataset.py` in clovaai/deep-text-recognition-benchmark and a common layout for
//! real word crops (e.g. a folder of SVT word crops). `strnas eval --data DIR` reads such a folder directly;
//! `strnas dataset create-lmdb` turns one into an LMDB dataset. Both parse `gt.txt` here.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// The ground-truth file name that marks an image folder.
pub const GT_FILE: &str = "gt.txt";

/// One parsed `gt.txt`: entries `(1-based line, relative path, label)` and the lines that could not be parsed
/// (`FILE:LINE: why`). Blank lines are ignored.
pub fn parse_gt(text: &str, gt: &Path) -> (Vec<(usize, String, String)>, Vec<String>) {
    let (mut entries, mut problems) = (vec![], vec![]);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('\t') {
            Some((path, label)) if !path.trim().is_empty() => entries.push((n + 1, path.trim().to_string(), label.to_string())),
            _ => problems.push(format!("{}:{}: no TAB between path and label", gt.display(), n + 1)),
        }
    }
    (entries, problems)
}

/// An image folder opened for reading: labels from `gt.txt`, images read from disk on demand.
pub struct FolderReader {
    path: PathBuf,
    /// `(image file, label)` per parsed `gt.txt` line, in order.
    entries: Vec<(PathBuf, String)>,
    /// Lines of `gt.txt` that could not be parsed.
    pub problems: Vec<String>,
}

impl FolderReader {
    /// Reads `dir/gt.txt`. Unparseable lines are kept in [`FolderReader::problems`] (reported, not fatal); a
    /// missing or unreadable `gt.txt` is an error naming it.
    pub fn open(dir: &Path) -> Result<Self> {
        let gt = dir.join(GT_FILE);
        let text = std::fs::read_to_string(&gt).with_context(|| format!("reading {}", gt.display()))?;
        let (entries, problems) = parse_gt(&text, &gt);
        Ok(FolderReader { path: dir.to_path_buf(), entries: entries.into_iter().map(|(_, p, l)| (dir.join(p), l)).collect(), problems })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every label, in `gt.txt` order.
    pub fn labels(&self) -> Vec<String> {
        self.entries.iter().map(|(_, l)| l.clone()).collect()
    }

    /// The image file of sample `index` (1-based, like LMDB keys).
    pub fn file(&self, index: usize) -> &Path {
        &self.entries[index - 1].0
    }

    /// Encoded bytes of sample `index` (1-based); a failure names the file.
    pub fn image(&self, index: usize) -> Result<Vec<u8>> {
        let f = self.file(index);
        std::fs::read(f).map_err(|e| anyhow!("{}: {e}", f.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gt_lines_parse_with_their_problems_named() {
        let (e, p) = parse_gt("a/1.jpg\tHello\n\nbad line\nb.png\tword with space\r\n\tnolabelpath\n", Path::new("gt.txt"));
        assert_eq!(e, vec![(1, "a/1.jpg".into(), "Hello".into()), (4, "b.png".into(), "word with space".into())]);
        assert_eq!(p, vec!["gt.txt:3: no TAB between path and label".to_string(), "gt.txt:5: no TAB between path and label".to_string()]);
    }
}
