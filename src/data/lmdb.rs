//! LMDB datasets in the format of clovaai/deep-text-recognition-benchmark (Baek et al. 2019): one LMDB environment
//! per directory (`data.mdb`, `lock.mdb`), keys `num-samples`, `image-%09d` and `label-%09d` (1-based), images as
//! encoded PNG/JPEG bytes, labels as UTF-8. Compatible both ways with the reference's `create_lmdb_dataset.py`
//! (Python `lmdb`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};

/// 1 TiB of address space, as the reference; the file only grows as data is written.
const MAP_SIZE: usize = 1 << 40;
/// Samples per write transaction (the reference commits every 1000).
const COMMIT_EVERY: usize = 1000;

pub fn image_key(index: usize) -> String {
    format!("image-{index:09}")
}
pub fn label_key(index: usize) -> String {
    format!("label-{index:09}")
}

/// Checks that `data.mdb` holds every page its meta page refers to, before LMDB maps it: reading a page past
/// the end of a mapped file (a dataset copied half-way) kills the process with SIGBUS instead of returning an
/// error. LMDB keeps two meta pages (pages 0 and 1); the newer one (higher transaction id) is current. Layout
/// (64-bit): a 16-byte page header, then magic u32, version u32, address u64, map size u64, two 48-byte
/// database records (the first one's leading u32 is the page size), last page number u64, transaction id u64.
fn check_data_file(file: &Path) -> Result<()> {
    use std::io::Read;
    const MAGIC: u32 = 0xBEEF_C0DE;
    let size = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    if size == 0 {
        bail!("{} is empty: not an LMDB file", file.display());
    }
    let mut head = vec![0u8; (size.min(2 * 65536)) as usize];
    std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut head)).with_context(|| format!("reading {}", file.display()))?;
    let u32_at = |b: &[u8], o: usize| b.get(o..o + 4).map(|x| u32::from_le_bytes(x.try_into().unwrap()));
    let u64_at = |b: &[u8], o: usize| b.get(o..o + 8).map(|x| u64::from_le_bytes(x.try_into().unwrap()));
    if u32_at(&head, 16) != Some(MAGIC) {
        bail!("{}: not an LMDB file (no LMDB meta page at its start)", file.display());
    }
    let page = u32_at(&head, 40).unwrap_or(0) as u64;
    if !(512..=65536).contains(&page) || !page.is_power_of_two() {
        bail!("{}: damaged LMDB meta page (page size {page})", file.display());
    }
    let meta = |at: usize| -> Option<(u64, u64)> {
        let m = head.get(at..)?;
        (u32_at(m, 16)? == MAGIC).then_some(())?;
        Some((u64_at(m, 136)?, u64_at(m, 144)?))
    };
    let (last, _) = [meta(0), meta(page as usize)].into_iter().flatten().max_by_key(|&(_, txn)| txn).context("no meta page")?;
    let need = (last + 1).saturating_mul(page);
    if size < need {
        bail!("{} is truncated: {size} bytes, but its last page ends at byte {need} (a copy cut short?)", file.display());
    }
    Ok(())
}

/// heed allows one open environment per path and process, so readers of the same dataset share one.
fn open_read_only(dir: &Path) -> Result<Env> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Env>>> = OnceLock::new();
    let key = dir.canonicalize().with_context(|| format!("opening {}", dir.display()))?;
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = open.get(&key) {
        return Ok(env.clone());
    }
    let mut opts = EnvOpenOptions::new();
    opts.map_size(MAP_SIZE).max_dbs(0);
    // SAFETY: the dataset is opened read-only; NO_LOCK is sound as long as no other process writes to it
    // while it is read, which is the documented contract for training data.
    let env = unsafe { opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK).open(&key) }
        .with_context(|| format!("opening LMDB {}", dir.display()))?;
    open.insert(key, env.clone());
    Ok(env)
}

/// Read-only access to one dataset. Cheap to share between threads (each `get` opens its own read
/// transaction).
pub struct LmdbReader {
    path: PathBuf,
    env: Env,
    db: Database<Bytes, Bytes>,
    len: usize,
}

impl LmdbReader {
    /// Opens `dir` read-only and without the lock file (read-only media work), as the reference does.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("data.mdb").is_file() {
            bail!("{}: not an LMDB dataset (no data.mdb)", dir.display());
        }
        check_data_file(&dir.join("data.mdb"))?;
        let env = open_read_only(dir)?;
        let rtxn = env.read_txn().with_context(|| format!("reading LMDB {}", dir.display()))?;
        let db: Database<Bytes, Bytes> = env
            .open_database(&rtxn, None)
            .with_context(|| format!("opening LMDB {}", dir.display()))?
            .ok_or_else(|| anyhow!("{}: LMDB has no main database", dir.display()))?;
        let raw = db
            .get(&rtxn, b"num-samples")
            .with_context(|| format!("reading {}", dir.display()))?
            .ok_or_else(|| anyhow!("{}: key num-samples is missing", dir.display()))?;
        let len = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| anyhow!("{}: key num-samples is not a number ({:?})", dir.display(), String::from_utf8_lossy(raw)))?;
        drop(rtxn);
        Ok(LmdbReader { path: dir.to_path_buf(), env, db, len })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `num-samples`.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get_key(&self, key: &str) -> Result<Vec<u8>> {
        let rtxn = self.env.read_txn().with_context(|| format!("reading {}", self.path.display()))?;
        let v = self.db.get(&rtxn, key.as_bytes()).with_context(|| format!("{}: reading key {key}", self.path.display()))?;
        v.map(|b| b.to_vec()).ok_or_else(|| anyhow!("{}: key {key} is missing", self.path.display()))
    }

    /// Label of sample `index` (1-based, as the keys).
    pub fn label(&self, index: usize) -> Result<String> {
        let key = label_key(index);
        let raw = self.get_key(&key)?;
        String::from_utf8(raw).map_err(|_| anyhow!("{}: key {key} is not UTF-8", self.path.display()))
    }

    /// Encoded image bytes of sample `index` (1-based).
    pub fn image(&self, index: usize) -> Result<Vec<u8>> {
        self.get_key(&image_key(index))
    }

    /// Every label, in key order; a failure names the key.
    pub fn labels(&self) -> Result<Vec<String>> {
        let rtxn = self.env.read_txn().with_context(|| format!("reading {}", self.path.display()))?;
        (1..=self.len)
            .map(|i| {
                let key = label_key(i);
                let v = self
                    .db
                    .get(&rtxn, key.as_bytes())
                    .with_context(|| format!("{}: reading key {key}", self.path.display()))?
                    .ok_or_else(|| anyhow!("{}: key {key} is missing", self.path.display()))?;
                std::str::from_utf8(v)
                    .map(str::to_string)
                    .map_err(|_| anyhow!("{}: key {key} is not UTF-8", self.path.display()))
            })
            .collect()
    }
}

/// Writes a dataset; samples are numbered from 1 in the order they are added. [`LmdbWriter::finish`]
/// writes `num-samples` last, so a crashed write is recognisable (no `num-samples`) rather than silently
/// short.
pub struct LmdbWriter {
    path: PathBuf,
    env: Env,
    db: Database<Bytes, Bytes>,
    pending: Vec<(String, Vec<u8>)>,
    count: usize,
}

impl LmdbWriter {
    /// Creates `dir` (which must not already hold a dataset).
    pub fn create(dir: &Path) -> Result<Self> {
        if dir.join("data.mdb").exists() {
            bail!("{}: already holds an LMDB dataset; choose a new --output or delete it", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut opts = EnvOpenOptions::new();
        opts.map_size(MAP_SIZE).max_dbs(0);
        // SAFETY: a fresh environment that only this writer uses.
        let env = unsafe { opts.open(dir) }.with_context(|| format!("creating LMDB {}", dir.display()))?;
        let mut wtxn = env.write_txn()?;
        let db = env.create_database(&mut wtxn, None).with_context(|| format!("creating LMDB {}", dir.display()))?;
        wtxn.commit()?;
        Ok(LmdbWriter { path: dir.to_path_buf(), env, db, pending: vec![], count: 0 })
    }

    /// Appends one sample; returns its 1-based index.
    pub fn push(&mut self, image: Vec<u8>, label: &str) -> Result<usize> {
        self.count += 1;
        self.pending.push((image_key(self.count), image));
        self.pending.push((label_key(self.count), label.as_bytes().to_vec()));
        if self.pending.len() >= 2 * COMMIT_EVERY {
            self.flush()?;
        }
        Ok(self.count)
    }

    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes an arbitrary key (for tools that patch datasets, and for tests of damaged datasets); it does
    /// not count as a sample.
    pub fn put_raw(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.pending.push((key.to_string(), value.to_vec()));
        Ok(())
    }

    /// Sets the value `finish` writes as `num-samples` (default: the number of pushed samples).
    pub fn finish_claiming(mut self, num_samples: usize) -> Result<usize> {
        self.count = num_samples;
        self.finish()
    }

    fn flush(&mut self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        for (k, v) in self.pending.drain(..) {
            self.db.put(&mut wtxn, k.as_bytes(), &v).with_context(|| format!("{}: writing {k}", self.path.display()))?;
        }
        wtxn.commit().with_context(|| format!("{}: committing", self.path.display()))
    }

    /// Writes the pending samples and `num-samples`, and syncs to disk.
    pub fn finish(mut self) -> Result<usize> {
        let n = self.count.to_string();
        self.pending.push(("num-samples".into(), n.into_bytes()));
        self.flush()?;
        self.env.force_sync().with_context(|| format!("{}: syncing", self.path.display()))?;
        Ok(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ds");
        let mut w = LmdbWriter::create(&p).unwrap();
        for i in 0..2500 {
            w.push(vec![i as u8; 3], &format!("w{i}")).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 2500);
        let r = LmdbReader::open(&p).unwrap();
        assert_eq!(r.len(), 2500);
        assert_eq!(r.label(1).unwrap(), "w0");
        assert_eq!(r.image(2500).unwrap(), vec![(2499 % 256) as u8; 3]);
        assert_eq!(r.labels().unwrap().len(), 2500);
        let e = r.label(2501).unwrap_err().to_string();
        assert!(e.contains("label-000002501") && e.contains("missing"), "{e}");
        assert!(LmdbWriter::create(&p).is_err());
        assert_eq!(crate::data::loader::find_all(dir.path()).unwrap(), vec![p]);
    }
}
