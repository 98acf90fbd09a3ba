//! Choosing where tensors live (`cpu`, `cuda`, `cuda:N` or `auto`: [`DeviceChoice`]) and their number format
//! (`f32` or `bf16`: [`Precision`]), as users name them on the command line and in config files.
//!
//! LibTorch's CUDA kernels live in `libtorch_cuda.so`. The binary links it, but no symbol of it is
//! referenced, so the linker's `--as-needed` drops it and LibTorch would report no CUDA device even on a
//! GPU host. It is therefore loaded at run time, the first time a device is resolved: always for `cuda`
//! (its error is reported), and for `auto` only when an NVIDIA driver (`libcuda.so.1`) is present, so CPU
//! hosts, and CPU-only LibTorch installs whose CUDA libraries are missing, pay nothing.
use std::ffi::{CStr, CString};
use std::str::FromStr;
use std::sync::OnceLock;

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
    /// CUDA was asked for but LibTorch's CUDA library could not be loaded.
    #[error("device '{0}' asked for, but LibTorch's CUDA backend could not be loaded: {1}")]
    NoBackend(String, String),
}

/// A config file's device: the same names as the command line (`cpu`, `cuda`, `cuda:N`, `auto`); an unknown
/// name is an error naming the key.
impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
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
            Self::Auto => {
                if !driver_present() {
                    return Ok(tch::Device::Cpu);
                }
                if let Err(e) = cuda_backend() {
                    tracing::warn!(
                        "an NVIDIA driver is present but LibTorch's CUDA backend is not ({e}); using the CPU"
                    );
                    return Ok(tch::Device::Cpu);
                }
                Ok(tch::Device::cuda_if_available())
            }
            Self::Cuda(i) => {
                cuda_backend().as_ref().map_err(|e| DeviceError::NoBackend(format!("cuda:{i}"), e.clone()))?;
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

/// The number format a user chooses for a model: one type for the encoder, the LLM and the trainer.
/// Log-probabilities, pooling and normalization stay f32 in every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats: the reference (matches sentence-transformers to ~1e-6, transformers' f32 LLM to 1e-3
    /// nats).
    #[default]
    F32,
    /// bfloat16: about 3x faster matrix products on CPUs with AVX-512 BF16 and on GPUs. For inference the
    /// weights are converted (encoder cosine to f32 >= 0.99; LLM log-probabilities move by up to ~0.15
    /// nats, fine for ranking, not for parity checks); for training it is mixed precision (f32 weights,
    /// gradients and optimizer state; bf16 products), see [`crate::embed::EncoderOptions::autocast`].
    Bf16,
}

/// Error for a precision that is not `f32` or `bf16`.
#[derive(Debug, thiserror::Error)]
#[error("unknown precision '{0}': expected f32 or bf16")]
pub struct PrecisionError(String);

impl Precision {
    /// The name a config or command line uses: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// The tch number type of tensors in this format.
    pub fn kind(self) -> tch::Kind {
        match self {
            Self::F32 => tch::Kind::Float,
            Self::Bf16 => tch::Kind::BFloat16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = PrecisionError;

    /// Parses `f32` (`fp32`, `float32`) or `bf16` (`bfloat16`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(PrecisionError(s.to_owned())),
        }
    }
}

/// A config file's precision: the command line's names; anything else is an error naming the key.
impl<'de> serde::Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Opens a shared library by name with `flags`; the loader's message on failure.
fn dlopen(name: &str, flags: libc::c_int) -> Result<(), String> {
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: `cname` is a valid NUL-terminated string; the handle is deliberately never closed, so the
    // library stays loaded for the life of the process. dlerror returns a thread-local string or null.
    unsafe {
        if libc::dlopen(cname.as_ptr(), flags).is_null() {
            let err = libc::dlerror();
            let message = if err.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            Err(format!("{name}: {message}"))
        } else {
            Ok(())
        }
    }
}

/// Whether the NVIDIA driver library can be loaded (cheap: it is absent on CPU hosts).
fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| dlopen("libcuda.so.1", libc::RTLD_LAZY | libc::RTLD_GLOBAL).is_ok())
}

/// Loads `libtorch_cuda.so` once (found through the binary's rpath to LibTorch, or `LD_LIBRARY_PATH`);
/// its static initializers register the CUDA backend with LibTorch.
fn cuda_backend() -> &'static Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(|| dlopen("libtorch_cuda.so", libc::RTLD_NOW | libc::RTLD_GLOBAL))
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

    #[test]
    fn parses_precision_names_and_rejects_others() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("FP32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!(Precision::Bf16.to_string().parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "f16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("precision 'f16'"), "{err}");
        assert!("mixed-bf16".parse::<Precision>().is_err());
    }

    #[test]
    fn auto_resolves_to_the_cpu_without_a_driver_and_cuda_reports_why_not() {
        if driver_present() {
            return; // a GPU host: scripts/device_check.sh covers it
        }
        assert_eq!(DeviceChoice::Auto.resolve().unwrap(), tch::Device::Cpu);
        let err = DeviceChoice::Cuda(0).resolve().unwrap_err().to_string();
        assert!(err.contains("cuda:0"), "{err}");
    }
}
