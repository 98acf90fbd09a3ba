//! Choosing where tensors live: `cpu`, `cuda`, `cuda:N` or `auto`.
use std::str::FromStr;

/// A device as the user names it on the command line or in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

/// Error for a device name that is not `cpu`, `cuda`, `cuda:N` or `auto`, or a CUDA device that is absent.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The name could not be parsed.
    #[error("unknown device '{0}': expected cpu, cuda, cuda:N or auto")]
    Unknown(String),
    /// CUDA was asked for but LibTorch sees no such device.
    #[error("device '{0}' asked for, but LibTorch sees {1} CUDA device(s)")]
    Unavailable(String, i64),
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(DeviceError::Unknown(s.to_string())),
            },
        }
    }
}

impl DeviceChoice {
    /// Resolves the choice to a tch device, failing if a named CUDA device is absent.
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Auto => Ok(tch::Device::cuda_if_available()),
            Self::Cuda(i) => {
                let n = tch::Cuda::device_count();
                if (i as i64) < n {
                    Ok(tch::Device::Cuda(i))
                } else {
                    Err(DeviceError::Unavailable(format!("cuda:{i}"), n))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names_and_rejects_others() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("CUDA:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }
}
