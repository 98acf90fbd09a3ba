//! GGUF files: typed metadata access and tensors dequantized to f32 by candle-core's GGUF reader.
//!
//! candle-core parses the header and dequantizes every ggml type it knows (F32, F16, BF16, Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0 and the K-quants Q2_K..Q8_K); this module only turns its f32 output into tch tensors and
//! gives the metadata typed getters whose errors name the file and the key.
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use super::files::ModelFileError;

/// The key/value metadata of a GGUF file, with getters that name the file and key on error.
#[derive(Debug, Clone)]
pub struct GgufMetadata {
    path: PathBuf,
    values: HashMap<String, Value>,
}

impl GgufMetadata {
    /// Wraps parsed metadata of the file at `path`.
    pub fn new(path: &Path, values: HashMap<String, Value>) -> Self {
        Self { path: path.to_path_buf(), values }
    }

    /// The file the metadata came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wrong_type(&self, key: &str, expected: &str) -> ModelFileError {
        ModelFileError::WrongType { path: self.path.clone(), key: key.to_string(), expected: expected.to_string() }
    }

    fn required<T>(&self, key: &str, v: Result<Option<T>, ModelFileError>) -> Result<T, ModelFileError> {
        v?.ok_or_else(|| ModelFileError::MissingKey { path: self.path.clone(), key: key.to_string() })
    }

    /// Whether the key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// A string value, if present.
    pub fn opt_string(&self, key: &str) -> Result<Option<&str>, ModelFileError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key, "string")),
        }
    }

    /// A required string value.
    pub fn string(&self, key: &str) -> Result<&str, ModelFileError> {
        self.required(key, self.opt_string(key))
    }

    /// A non-negative integer of any width, if present.
    pub fn opt_uint(&self, key: &str) -> Result<Option<usize>, ModelFileError> {
        let Some(v) = self.values.get(key) else { return Ok(None) };
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            _ => return Err(self.wrong_type(key, "integer")),
        };
        usize::try_from(n).map(Some).map_err(|_| self.wrong_type(key, "non-negative integer"))
    }

    /// A required non-negative integer.
    pub fn uint(&self, key: &str) -> Result<usize, ModelFileError> {
        self.required(key, self.opt_uint(key))
    }

    /// A float (f32 or f64), if present.
    pub fn opt_float(&self, key: &str) -> Result<Option<f64>, ModelFileError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(_) => Err(self.wrong_type(key, "float")),
        }
    }

    /// A required float.
    pub fn float(&self, key: &str) -> Result<f64, ModelFileError> {
        self.required(key, self.opt_float(key))
    }

    /// A boolean, if present.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelFileError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key, "bool")),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&Vec<Value>>, ModelFileError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong_type(key, "array")),
        }
    }

    /// A required array of strings (token lists, merges).
    pub fn string_array(&self, key: &str) -> Result<Vec<&str>, ModelFileError> {
        let a = self.required(key, self.array(key))?;
        a.iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(self.wrong_type(key, "array of strings")),
            })
            .collect()
    }

    /// An array of integers (token types), if present.
    pub fn opt_int_array(&self, key: &str) -> Result<Option<Vec<i64>>, ModelFileError> {
        let Some(a) = self.array(key)? else { return Ok(None) };
        a.iter()
            .map(|v| match v {
                Value::I32(x) => Ok(i64::from(*x)),
                Value::U32(x) => Ok(i64::from(*x)),
                Value::I64(x) => Ok(*x),
                Value::U8(x) => Ok(i64::from(*x)),
                Value::I8(x) => Ok(i64::from(*x)),
                _ => Err(self.wrong_type(key, "array of integers")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// An open GGUF file held in memory: its metadata and its tensors, read on demand.
pub struct GgufFile {
    path: PathBuf,
    bytes: Cursor<Vec<u8>>,
    content: Content,
    metadata: GgufMetadata,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("tensors", &self.content.tensor_infos.len()).finish()
    }
}

impl GgufFile {
    /// Parses the header of an in-memory copy of the file at `path`. A damaged header is an error naming
    /// the file: [`check_header`] first makes sure every count and length it declares fits in the bytes
    /// there are, since candle's reader allocates what the header asks for (a flipped bit in an array length
    /// asked for 150 GB and aborted the process).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, ModelFileError> {
        check_header(&bytes).map_err(|message| ModelFileError::Format { path: path.to_path_buf(), message })?;
        let mut bytes = Cursor::new(bytes);
        let content = Content::read(&mut bytes)
            .map_err(|e| ModelFileError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        let metadata = GgufMetadata::new(path, content.metadata.clone());
        Ok(Self { path: path.to_path_buf(), bytes, content, metadata })
    }

    /// Reads and parses the file at `path`.
    pub fn open(path: &Path) -> Result<Self, ModelFileError> {
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(path, bytes)
    }

    /// The file's metadata.
    pub fn metadata(&self) -> &GgufMetadata {
        &self.metadata
    }

    /// Names of all tensors in the file.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// The ggml type name of a tensor (`Q4_1`, `F32`...), if present.
    pub fn tensor_type(&self, name: &str) -> Option<String> {
        self.content.tensor_infos.get(name).map(|t| format!("{:?}", t.ggml_dtype))
    }

    /// Dequantizes tensor `name` to an f32 CPU tensor in PyTorch (row-major) shape, or `None` if absent.
    pub fn tensor_f32(&mut self, name: &str) -> Result<Option<tch::Tensor>, ModelFileError> {
        let Some(info) = self.content.tensor_infos.get(name) else { return Ok(None) };
        let bad = |e: candle_core::Error| ModelFileError::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            message: e.to_string(),
        };
        // Every ggml type stores at least 2 bits per element: a tensor whose shape needs more than the bytes
        // after its offset is damaged (and reading it would allocate what the shape asks for).
        let available = (self.bytes.get_ref().len() as u64)
            .saturating_sub(self.content.tensor_data_offset.saturating_add(info.offset));
        let elements = info.shape.dims().iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        if elements.is_none_or(|n| n.div_ceil(4) > available) {
            return Err(ModelFileError::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                message: format!(
                    "shape {:?} does not fit in the {available} bytes after its offset",
                    info.shape.dims()
                ),
            });
        }
        let q = info.read(&mut self.bytes, self.content.tensor_data_offset, &candle_core::Device::Cpu).map_err(bad)?;
        let dims: Vec<i64> = q.shape().dims().iter().map(|&d| d as i64).collect();
        let values = q
            .dequantize(&candle_core::Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(bad)?;
        Ok(Some(tch::Tensor::from_slice(&values).reshape(dims.as_slice())))
    }
}

/// Checks that every count and length a GGUF header declares (metadata strings and arrays, the tensor
/// table) fits in `bytes`, before a reader allocates for it. Versions 1 (32-bit counts) to 3.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != b"GGUF" {
        return Err("not a GGUF file (no GGUF magic)".into());
    }
    let version = r.u32()?;
    if !(1..=3).contains(&version) {
        return Err(format!("unknown GGUF version {version}"));
    }
    let wide = version >= 2;
    let count = |r: &mut Reader| if wide { r.u64() } else { r.u32().map(u64::from) };
    let tensors = count(&mut r)?;
    let entries = count(&mut r)?;
    // A metadata entry takes at least 13 bytes (key length, one key byte, type, a one-byte value); a
    // tensor entry at least 21 (name length, one byte, n_dims, type, offset).
    r.fits(entries, 13, "metadata entries")?;
    for _ in 0..entries {
        r.string(wide)?;
        let kind = r.u32()?;
        r.value(kind, wide, 0)?;
    }
    r.fits(tensors, 21, "tensors")?;
    for _ in 0..tensors {
        r.string(wide)?;
        let dims = r.u32()?;
        if dims > 8 {
            return Err(format!("a tensor with {dims} dimensions"));
        }
        for _ in 0..dims {
            count(&mut r)?;
        }
        r.u32()?;
        r.u64()?;
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8], String> {
        let end = usize::try_from(n).ok().and_then(|n| self.at.checked_add(n)).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "the header needs {n} more bytes at offset {} but the file ends at {}",
                self.at,
                self.bytes.len()
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// `n` items of at least `min_size` bytes each fit in what is left.
    fn fits(&self, n: u64, min_size: u64, what: &str) -> Result<(), String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n.checked_mul(min_size).is_none_or(|need| need > left) {
            return Err(format!("the header declares {n} {what}, more than the {left} bytes left can hold"));
        }
        Ok(())
    }

    fn string(&mut self, wide: bool) -> Result<(), String> {
        let len = if wide { self.u64()? } else { u64::from(self.u32()?) };
        self.take(len).map(|_| ())
    }

    /// Skips one value of GGUF type `kind` (arrays nest at most 4 deep).
    fn value(&mut self, kind: u32, wide: bool, depth: usize) -> Result<(), String> {
        let fixed = |kind: u32| match kind {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match kind {
            8 => self.string(wide),
            9 => {
                if depth >= 4 {
                    return Err("GGUF arrays nested too deep".into());
                }
                let item = self.u32()?;
                let len = if wide { self.u64()? } else { u64::from(self.u32()?) };
                match fixed(item) {
                    Some(size) => self.take(len.checked_mul(size).ok_or("an array too long")?).map(|_| ()),
                    None => {
                        // Strings take at least their length prefix, arrays their type and length.
                        self.fits(len, if wide { 8 } else { 4 }, "array items")?;
                        (0..len).try_for_each(|_| self.value(item, wide, depth + 1))
                    }
                }
            }
            other => match fixed(other) {
                Some(size) => self.take(size).map(|_| ()),
                None => Err(format!("unknown GGUF value type {other}")),
            },
        }
    }
}
