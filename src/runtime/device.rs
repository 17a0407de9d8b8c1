//! Where a runtime executes: the project-wide device type (`--device cpu | cuda | cuda:N`).

/// Where a runtime executes. Spelled `cpu`, `cuda` (ordinal 0) or `cuda:N` on the command line; serialised as
/// `"cpu"` or `{"cuda": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (expected cpu, cuda or cuda:N)")),
        }
    }
}

#[cfg(feature = "torch")]
impl Device {
    /// The same device for libtorch.
    pub fn tch(self) -> tch::Device {
        match self {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn spellings_round_trip() {
        for (s, d) in [("cpu", Device::Cpu), ("cuda", Device::Cuda(0)), ("cuda:2", Device::Cuda(2))] {
            assert_eq!(s.parse::<Device>(), Ok(d));
            assert_eq!(d.to_string(), s);
        }
        assert!("gpu".parse::<Device>().unwrap_err().contains("expected cpu, cuda or cuda:N"));
    }
}
