//! JSON Lines: one JSON value per line; blank lines are skipped. Every error names the file and line.
use super::InputError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Reads `path` line by line, yielding each parsed record with its 1-based line number, or an error that
/// names the file and line. The iterator goes on after a malformed line, so a caller can send the error
/// to a dead-letter sink and keep the rest; [`read_all`] stops at the first error instead.
pub fn records<T: DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(usize, T), InputError>>, InputError> {
    let file = File::open(path).map_err(|source| InputError::Open { path: path.to_path_buf(), source })?;
    let path: PathBuf = path.to_path_buf();
    let mut lines = BufReader::new(file).lines().enumerate();
    Ok(std::iter::from_fn(move || loop {
        let (index, line) = lines.next()?;
        let line_no = index + 1;
        let line = match line {
            Ok(line) => line,
            Err(source) => return Some(Err(InputError::Read { path: path.clone(), line: line_no, source })),
        };
        if line.trim().is_empty() {
            continue;
        }
        return Some(
            serde_json::from_str::<T>(&line).map(|record| (line_no, record)).map_err(|e| InputError::Malformed {
                path: path.clone(),
                line: line_no,
                message: e.to_string(),
            }),
        );
    }))
}

/// Reads every record of `path`, failing on the first malformed line.
pub fn read_all<T: DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>, InputError> {
    records(path)?.collect()
}

/// Writes records as JSON Lines to a file, buffered.
pub struct JsonlWriter {
    out: BufWriter<File>,
}

impl JsonlWriter {
    /// Creates (or truncates) `path`, creating its parent directories.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        Ok(Self { out: BufWriter::new(File::create(path)?) })
    }

    /// Appends one record.
    pub fn write<T: Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    /// Flushes buffered records to the file.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fretflow_records::Passage;

    #[test]
    fn malformed_line_names_file_and_line_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, "{\"_id\":\"a\",\"text\":\"x\"}\n\n{not json}\n{\"id\":\"b\",\"text\":\"y\"}\n").unwrap();
        let got: Vec<_> = records::<Passage>(&path).unwrap().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().1.id, "a");
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("c.jsonl:3:"), "{err}");
        assert_eq!(got[2].as_ref().unwrap().0, 4);
        assert!(read_all::<Passage>(&path).is_err());
    }

    #[test]
    fn missing_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, "{\"_id\":\"a\"}\n").unwrap();
        let err = read_all::<Passage>(&path).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("text"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = read_all::<Passage>(Path::new("/no/such/file.jsonl")).unwrap_err().to_string();
        assert!(err.contains("/no/such/file.jsonl"), "{err}");
    }
}
