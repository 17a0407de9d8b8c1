//! A description of the machine a benchmark ran on (for the JSON, and to tell when a baseline came from
//! another machine). Linux `/proc` facts; fields stay empty where unavailable.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    pub memory_gib: f64,
    pub os: String,
    pub hostname: String,
    /// 1-minute load average when the run started (a busy machine shows here).
    pub load_1m: f64,
    /// GPU names from `nvidia-smi` (only probed for CUDA runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    pub fn describe(probe_gpus: bool) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()))
            .map(|kb| (kb / 1048576.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        let gpus = if probe_gpus {
            std::process::Command::new("nvidia-smi")
                .args(["--query-gpu=name", "--format=csv,noheader"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
                .unwrap_or_default()
        } else {
            vec![]
        };
        Machine {
            cpu,
            logical_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib,
            os: format!("{} {}", std::env::consts::OS, read("/proc/sys/kernel/osrelease").trim()),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            load_1m: read("/proc/loadavg").split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0),
            gpus,
        }
    }

    /// The hardware part of the description (what makes absolute times comparable).
    pub fn hardware(&self) -> String {
        let mut s = format!("{} x{} ({} GiB)", self.cpu, self.logical_cpus, self.memory_gib);
        if !self.gpus.is_empty() {
            s.push_str(&format!(", {}", self.gpus.join(", ")));
        }
        s
    }
}
