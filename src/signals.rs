//! Stop signals for long jobs: SIGTERM (what Slurm and Kubernetes send before they kill or preempt a job) and
//! SIGINT (Ctrl-C). A job installs [`install_stop_handler`], polls [`stop_signal`] between steps, writes its
//! checkpoint and exits with [`signal_exit_code`]. Foundation layer: depends on no other strnas module.
//!
//! Repeated SIGTERMs are one request: a scheduler signals every process of a job, and a wrapper such as
//! `strnas sweep run-one` forwards the signal to its child as well, so a job may receive it twice; it still
//! checkpoints. A second Ctrl-C ends the process at once (the default action), as a user pressing it twice
//! expects.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first stop signal received, 0 while none has.
static STOP: AtomicI32 = AtomicI32::new(0);

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// The first stop signal received since the process started (SIGTERM 15, SIGINT 2), if any.
pub fn stop_signal() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The shell's exit status for a process ended by `sig` (128 + its number).
pub fn signal_exit_code(sig: i32) -> i32 {
    128 + sig
}

/// The signal an exit status of 128 + n stands for (SIGINT or SIGTERM only), as [`signal_exit_code`] writes it.
pub fn stop_signal_of_exit_code(code: i32) -> Option<i32> {
    [SIGINT, SIGTERM].into_iter().find(|&s| signal_exit_code(s) == code)
}

/// "SIGTERM", "SIGINT (Ctrl-C)" or "signal N".
pub fn signal_name(sig: i32) -> String {
    match sig {
        SIGINT => "SIGINT (Ctrl-C)".into(),
        SIGTERM => "SIGTERM".into(),
        SIGKILL => "SIGKILL".into(),
        s => format!("signal {s}"),
    }
}

/// Catches SIGTERM and SIGINT (once per process; later calls do nothing): the first of either is recorded for
/// [`stop_signal`]. SIGTERM stays caught; after the first SIGINT, SIGINT's default action is restored. A no-op
/// off Unix.
pub fn install_stop_handler() {
    #[cfg(unix)]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            extern "C" fn on_stop(sig: i32) {
                let _ = STOP.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                if sig == SIGINT {
                    // SAFETY: signal(2) is async-signal-safe; this restores SIGINT's default action.
                    unsafe {
                        signal(SIGINT, SIG_DFL);
                    }
                }
            }
            // SAFETY: installing a handler that only stores to an atomic and calls signal(2).
            unsafe {
                signal(SIGTERM, on_stop as extern "C" fn(i32) as usize);
                signal(SIGINT, on_stop as extern "C" fn(i32) as usize);
            }
        });
    }
}

/// Sends `sig` to process `pid`; false when the process does not exist (or is not ours). A no-op off Unix.
pub fn send(pid: u32, sig: i32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) with a pid we spawned; no memory is shared.
        unsafe { kill(pid as i32, sig) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, sig);
        false
    }
}

#[cfg(unix)]
extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}
#[cfg(unix)]
const SIG_DFL: usize = 0;
