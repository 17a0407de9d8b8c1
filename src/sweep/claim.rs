//! A job's claim: an exclusive `flock(2)` on `jobs/<stage>/<index>.lock`, held for as long as the claiming
//! process (and the command it runs, which inherits the descriptor) lives.
//!
//! The kernel drops the lock when the last holder exits, however it exits (SIGKILL, a node's crash on NFSv4
//! after the server's lease), so a dead runner's claim never blocks the job; a second runner of a live job is
//! refused. The file's text (host, pid, time) is only for people and `status`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A held claim; dropping it releases the lock, also for a child that inherited the descriptor (the lock
/// belongs to the open file; a runner killed before dropping it leaves the lock with its command).
#[derive(Debug)]
pub struct Claim {
    file: File,
    path: PathBuf,
}

/// Who holds a claim, as its file says.
pub fn holder(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Claim {
    /// Takes the claim at `path`, or `Ok(None)` when a live process holds it.
    pub fn try_take(path: &Path) -> Result<Option<Claim>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening claim {}", path.display()))?;
        if !lock(&file).with_context(|| format!("locking claim {}", path.display()))? {
            return Ok(None);
        }
        let mut claim = Claim { file, path: path.to_path_buf() };
        claim.describe()?;
        Ok(Some(claim))
    }

    /// True when a live process holds the claim at `path` (checked by trying to take it, then letting go).
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(path) else { return false };
        match lock(&file) {
            Ok(true) => {
                unlock(&file);
                false
            }
            Ok(false) => true,
            Err(_) => false,
        }
    }

    fn describe(&mut self) -> Result<()> {
        let host = crate::sweep::state::hostname();
        let text = format!("host {host} pid {} since {}\n", std::process::id(), crate::sweep::state::now_rfc3339());
        self.file.set_len(0).and_then(|_| self.file.write_all(text.as_bytes())).with_context(|| format!("writing claim {}", self.path.display()))
    }

    /// Lets a child process inherit the locked descriptor, so the claim lives as long as the command does even
    /// if this runner is killed first. Call right before spawning the child.
    pub fn inherit_to_children(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this struct owns.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == 0
        };
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()).with_context(|| format!("sharing claim {} with the job", self.path.display()))
        }
    }
}

impl Drop for Claim {
    /// Unlocks explicitly rather than by closing: a process forked meanwhile (any thread's spawn) holds a copy
    /// of the descriptor until it execs, and closing ours alone would leave the lock held until then.
    fn drop(&mut self) {
        unlock(&self.file);
    }
}

/// Non-blocking exclusive lock: Ok(false) when someone else holds it.
fn lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn unlock(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open descriptor.
    unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_UN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_and_released_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("jobs/train/3.lock");
        assert!(!Claim::is_held(&p), "no file, no claim");
        let first = Claim::try_take(&p).unwrap().expect("free");
        assert!(holder(&p).contains(&format!("pid {}", std::process::id())));
        assert!(Claim::try_take(&p).unwrap().is_none(), "a second runner is refused");
        assert!(Claim::is_held(&p));
        drop(first);
        assert!(!Claim::is_held(&p), "released with its holder");
        assert!(Claim::try_take(&p).unwrap().is_some());
    }

    #[test]
    fn a_dead_processs_claim_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.lock");
        // A process that takes the lock with flock(1) (-o: the command it runs does not inherit it) and is
        // killed while holding it.
        let mut child = std::process::Command::new("flock").arg("-o").arg(&p).args(["sleep", "60"]).spawn().expect("flock(1) from util-linux");
        let t0 = std::time::Instant::now();
        while !Claim::is_held(&p) {
            assert!(t0.elapsed().as_secs() < 60, "flock(1) never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(Claim::try_take(&p).unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(Claim::try_take(&p).unwrap().is_some(), "the dead holder's claim was released");
    }
}
