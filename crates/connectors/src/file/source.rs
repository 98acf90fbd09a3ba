//! Passage sources from files: JSONL (read once, or follow a growing file) and Parquet (read once).
//!
//! Storage and format are separate: [`FileTail`] hands out the bytes appended to a file since the last
//! poll (storage); [`JsonlPassages`] splits them into lines and decodes each with
//! [`decode_json_passage`] (format). [`ParquetPassages`] reads row groups of a Parquet file. Both yield
//! [`SourceRecord`]s, so a bad record is a dead letter naming `file:line` (or `file:row`), and reading
//! goes on.
use crate::contain::contained;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use fretflow_records::{decode_json_passage, DeadLetter, Passage, PassageEvent, SourceRecord, Stage};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A source that cannot go on (the file is gone or unreadable). Bad records are not errors: they are
/// dead letters among the records.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Opening or reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file shrank while being followed (truncated or replaced).
    #[error("{path} shrank from {was} to {now} bytes while being followed")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes read so far.
        was: u64,
        /// Its size now.
        now: u64,
    },
    /// The file's extension names no passage format.
    #[error("{path}: expected a .jsonl or .parquet file of passages")]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// The Parquet file is malformed or lacks a required column.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What one poll of a source gives.
#[derive(Debug, Default)]
pub struct Polled {
    /// Records read, in order.
    pub records: Vec<SourceRecord>,
    /// Whether the source is exhausted (never true for a followed file).
    pub finished: bool,
}

/// A source of passage records, read by its own thread.
pub trait PassageReader: Send {
    /// Reads up to `max` more records.
    fn poll(&mut self, max: usize) -> Result<Polled, SourceError>;
    /// A short description for logs.
    fn describe(&self) -> String;
}

/// Every record of a whole `.jsonl` (or `.json`) or `.parquet` file, in file order, read by the same readers
/// as a pipeline's `[source]`: the passage events, and a dead letter (naming its `file:line` or row and
/// why) for each record that does not decode.
pub fn read_all_events(path: &Path) -> Result<(Vec<PassageEvent>, Vec<DeadLetter>), SourceError> {
    let mut reader: Box<dyn PassageReader> = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => Box::new(ParquetPassages::open(path)?),
        Some("jsonl") | Some("json") => Box::new(JsonlPassages::open(path, false)?),
        _ => return Err(SourceError::Unsupported { path: path.into() }),
    };
    let (mut events, mut dead) = (Vec::new(), Vec::new());
    loop {
        let polled = reader.poll(4096)?;
        for record in polled.records {
            match record {
                Ok(event) => events.push(event),
                Err(letter) => dead.push(letter),
            }
        }
        if polled.finished {
            return Ok((events, dead));
        }
    }
}

/// Storage: the bytes appended to a file since the last read.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    file: File,
    offset: u64,
}

impl FileTail {
    /// Opens `path` at its start.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io { path: path.into(), source })?;
        Ok(Self { path: path.into(), file, offset: 0 })
    }

    /// Up to `max_bytes` bytes appended since the last read (empty at the end of the file).
    pub fn read_more(&mut self, max_bytes: usize) -> Result<Vec<u8>, SourceError> {
        let io = |source| SourceError::Io { path: self.path.clone(), source };
        let len = self.file.metadata().map_err(io)?.len();
        if len < self.offset {
            return Err(SourceError::Truncated { path: self.path.clone(), was: self.offset, now: len });
        }
        self.file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut buf = Vec::new();
        (&mut self.file).take(max_bytes as u64).read_to_end(&mut buf).map_err(io)?;
        self.offset += buf.len() as u64;
        Ok(buf)
    }
}

/// Format: JSON Lines passages over a [`FileTail`]. In `follow` mode a last line without its newline
/// waits for the rest; otherwise it is read as a line at the end of the file.
#[derive(Debug)]
pub struct JsonlPassages {
    tail: FileTail,
    follow: bool,
    partial: Vec<u8>,
    line: u64,
    /// Decoded records not yet handed out.
    ready: std::collections::VecDeque<SourceRecord>,
    /// The file has been read to its end (read-once mode).
    exhausted: bool,
}

impl JsonlPassages {
    /// Reads `path`; `follow` keeps waiting for appended lines.
    pub fn open(path: &Path, follow: bool) -> Result<Self, SourceError> {
        let tail = FileTail::open(path)?;
        Ok(Self { tail, follow, partial: Vec::new(), line: 0, ready: Default::default(), exhausted: false })
    }

    fn decode(&mut self, bytes: &[u8], out: &mut std::collections::VecDeque<SourceRecord>) {
        self.line += 1;
        let origin = format!("{}:{}", self.tail.path.display(), self.line);
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.trim_end_matches('\r'),
            Err(e) => {
                let lossy = String::from_utf8_lossy(bytes);
                out.push_back(Err(DeadLetter::new(
                    Stage::Source,
                    format!("line is not UTF-8: {e}"),
                    origin,
                    Some(&lossy),
                )));
                return;
            }
        };
        if !text.trim().is_empty() {
            out.push_back(decode_json_passage(text, self.line, &origin));
        }
    }
}

impl PassageReader for JsonlPassages {
    fn poll(&mut self, max: usize) -> Result<Polled, SourceError> {
        let mut ready = std::mem::take(&mut self.ready);
        while ready.len() < max && !self.exhausted {
            let chunk = self.tail.read_more(1 << 16)?;
            if chunk.is_empty() {
                if !self.follow {
                    if !self.partial.is_empty() {
                        let last = std::mem::take(&mut self.partial);
                        self.decode(&last, &mut ready);
                    }
                    self.exhausted = true;
                }
                break;
            }
            self.partial.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(newline) = self.partial[start..].iter().position(|b| *b == b'\n') {
                let line = self.partial[start..start + newline].to_vec();
                self.decode(&line, &mut ready);
                start += newline + 1;
            }
            self.partial.drain(..start);
        }
        let records: Vec<SourceRecord> = ready.drain(..ready.len().min(max)).collect();
        self.ready = ready;
        Ok(Polled { records, finished: self.exhausted && self.ready.is_empty() })
    }

    fn describe(&self) -> String {
        format!("JSONL {}{}", self.tail.path.display(), if self.follow { " (following)" } else { "" })
    }
}

/// Format: Parquet passages, read once, row group by row group. String (or integer) columns `id` (or
/// `_id`) and `text` are required, `title` and `op` optional.
pub struct ParquetPassages {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    pending: std::collections::VecDeque<SourceRecord>,
    row: u64,
}

impl std::fmt::Debug for ParquetPassages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetPassages").field("path", &self.path).field("row", &self.row).finish()
    }
}

impl ParquetPassages {
    /// Opens `path`, checking its columns.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let bad = |message: String| SourceError::Parquet { path: path.into(), message };
        let file = File::open(path).map_err(|source| SourceError::Io { path: path.into(), source })?;
        let builder = contained(|| ParquetRecordBatchReaderBuilder::try_new(file))
            .map_err(|panic| bad(format!("damaged file: {panic}")))?
            .map_err(|e| bad(e.to_string()))?;
        let schema = builder.schema().clone();
        let has = |name: &str| schema.column_with_name(name).is_some();
        if !has("id") && !has("_id") {
            return Err(bad("no `id` (or `_id`) column".into()));
        }
        if !has("text") {
            return Err(bad("no `text` column".into()));
        }
        let reader = builder.with_batch_size(1024).build().map_err(|e| bad(e.to_string()))?;
        Ok(Self { path: path.into(), reader, pending: Default::default(), row: 0 })
    }

    fn decode_batch(&mut self, batch: &RecordBatch) {
        let column = |name: &str| batch.column_by_name(name).map(|c| c.as_ref());
        let id = column("id").or_else(|| column("_id"));
        let (title, text, op) = (column("title"), column("text"), column("op"));
        for i in 0..batch.num_rows() {
            self.row += 1;
            let origin = format!("{}:row {}", self.path.display(), self.row);
            let dead = |reason: String| Err(DeadLetter::new(Stage::Source, reason, origin.clone(), None));
            let record = (|| {
                let id = match cell(id, i) {
                    Ok(Some(id)) if !id.trim().is_empty() => id,
                    Ok(Some(_)) => return dead("field `id` is empty".into()),
                    Ok(None) => return dead("missing field `id`".into()),
                    Err(kind) => return dead(format!("field `id` must be a string, found {kind}")),
                };
                let delete = match cell(op, i) {
                    Ok(None) => false,
                    Ok(Some(op)) if op == "upsert" => false,
                    Ok(Some(op)) if op == "delete" => true,
                    Ok(Some(op)) => return dead(format!("field `op` must be \"upsert\" or \"delete\", found {op:?}")),
                    Err(kind) => return dead(format!("field `op` must be a string, found {kind}")),
                };
                let passage = if delete {
                    None
                } else {
                    let text = match cell(text, i) {
                        Ok(Some(t)) if !t.trim().is_empty() => t,
                        Ok(Some(_)) => return dead("field `text` is empty".into()),
                        Ok(None) => return dead("missing field `text`".into()),
                        Err(kind) => return dead(format!("field `text` must be a string, found {kind}")),
                    };
                    let title = match cell(title, i) {
                        Ok(t) => t.unwrap_or_default(),
                        Err(kind) => return dead(format!("field `title` must be a string, found {kind}")),
                    };
                    Some(Passage { id: id.clone(), title, text })
                };
                Ok(PassageEvent { id, seq: self.row, passage, origin: origin.clone() })
            })();
            self.pending.push_back(record);
        }
    }
}

/// The string in row `i` of `column` (`None` when the column is absent or the cell null), or the
/// column's type name when it is not a string or integer column.
fn cell(column: Option<&dyn Array>, i: usize) -> Result<Option<String>, String> {
    let Some(column) = column else { return Ok(None) };
    if column.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => column.as_string_view().value(i).to_string(),
        DataType::Int64 => column.as_primitive::<arrow::datatypes::Int64Type>().value(i).to_string(),
        DataType::Int32 => column.as_primitive::<arrow::datatypes::Int32Type>().value(i).to_string(),
        other => return Err(other.to_string()),
    }))
}

impl PassageReader for ParquetPassages {
    fn poll(&mut self, max: usize) -> Result<Polled, SourceError> {
        while self.pending.len() < max {
            // The parquet crate panics on some corrupt pages: contained, that is an error naming the file
            // (which stops the pipeline: the file cannot be read on).
            let bad = |message: String| SourceError::Parquet { path: self.path.clone(), message };
            let next = contained(|| self.reader.next()).map_err(|panic| bad(format!("damaged file: {panic}")))?;
            match next {
                Some(Ok(batch)) => self.decode_batch(&batch),
                Some(Err(e)) => return Err(bad(e.to_string())),
                None => break,
            }
        }
        let n = self.pending.len().min(max);
        let records: Vec<SourceRecord> = self.pending.drain(..n).collect();
        let finished = self.pending.is_empty() && records.len() < max;
        Ok(Polled { records, finished })
    }

    fn describe(&self) -> String {
        format!("Parquet {}", self.path.display())
    }
}

/// The first `limit` records of another reader (valid or not), then finished: for trying a pipeline on
/// the head of a large corpus.
pub struct Limited {
    inner: Box<dyn PassageReader>,
    left: usize,
}

impl Limited {
    /// Hands out at most `limit` records of `inner`.
    pub fn new(inner: Box<dyn PassageReader>, limit: usize) -> Self {
        Self { inner, left: limit }
    }
}

impl PassageReader for Limited {
    fn poll(&mut self, max: usize) -> Result<Polled, SourceError> {
        if self.left == 0 {
            return Ok(Polled { records: Vec::new(), finished: true });
        }
        let mut polled = self.inner.poll(max.min(self.left))?;
        polled.records.truncate(self.left);
        self.left -= polled.records.len();
        polled.finished |= self.left == 0;
        Ok(polled)
    }

    fn describe(&self) -> String {
        format!("{} (first {} records)", self.inner.describe(), self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn following_a_jsonl_file_waits_for_the_end_of_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        std::fs::write(&path, "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"b\",").unwrap();
        let mut reader = JsonlPassages::open(&path, true).unwrap();
        let first = reader.poll(100).unwrap();
        assert_eq!(first.records.len(), 1);
        assert!(!first.finished);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\"text\":\"y\"}\nnot json\n").unwrap();
        let second = reader.poll(100).unwrap();
        assert_eq!(second.records.len(), 2);
        assert_eq!(second.records[0].as_ref().unwrap().id, "b");
        let dead = second.records[1].as_ref().unwrap_err();
        assert!(dead.input.ends_with("p.jsonl:3") && dead.reason.starts_with("malformed JSON"), "{dead:?}");
    }

    #[test]
    fn a_whole_file_reads_into_events_and_dead_letters_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"text\":\"x y z\"}\n{\"id\":\"b\",\"text\":\"\"}\n{\"id\":\"a\",\"op\":\"delete\"}\n",
        )
        .unwrap();
        let (events, dead) = read_all_events(&path).unwrap();
        let got: Vec<(&str, bool)> = events.iter().map(|e| (e.id.as_str(), e.passage.is_some())).collect();
        assert_eq!(got, [("a", true), ("a", false)]);
        assert_eq!(dead.len(), 1);
        assert!(dead[0].input.ends_with("corpus.jsonl:2") && dead[0].reason == "field `text` is empty", "{dead:?}");
        let other = dir.path().join("corpus.csv");
        std::fs::write(&other, "id,text\n").unwrap();
        let error = read_all_events(&other).unwrap_err().to_string();
        assert!(error.contains("corpus.csv") && error.contains(".jsonl or .parquet"), "{error}");
    }

    #[test]
    fn a_poll_returns_at_most_max_records_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let lines: String = (0..5).map(|i| format!("{{\"id\":\"p{i}\",\"text\":\"x\"}}\n")).collect();
        std::fs::write(&path, lines).unwrap();
        let mut reader = JsonlPassages::open(&path, false).unwrap();
        let sizes: Vec<(usize, bool)> =
            (0..3).map(|_| reader.poll(2).unwrap()).map(|p| (p.records.len(), p.finished)).collect();
        assert_eq!(sizes, vec![(2, false), (2, false), (1, true)]);
    }

    #[test]
    fn a_limited_reader_stops_after_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let lines: String = (0..10).map(|i| format!("{{\"id\":\"p{i}\",\"text\":\"x\"}}\n")).collect();
        std::fs::write(&path, lines).unwrap();
        let mut reader = Limited::new(Box::new(JsonlPassages::open(&path, false).unwrap()), 3);
        let first = reader.poll(2).unwrap();
        let second = reader.poll(2).unwrap();
        assert_eq!((first.records.len(), first.finished, second.records.len(), second.finished), (2, false, 1, true));
        let ids: Vec<String> =
            first.records.iter().chain(&second.records).map(|r| r.as_ref().unwrap().id.clone()).collect();
        assert_eq!(ids, ["p0", "p1", "p2"]);
    }

    #[test]
    fn reading_once_takes_a_last_line_without_newline_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        std::fs::write(&path, "\n{\"_id\":\"a\",\"text\":\"x\"}").unwrap();
        let mut reader = JsonlPassages::open(&path, false).unwrap();
        let polled = reader.poll(100).unwrap();
        assert!(polled.finished);
        assert_eq!(polled.records.len(), 1);
        let event = polled.records[0].as_ref().unwrap();
        assert_eq!((event.id.as_str(), event.seq), ("a", 2));
    }
}
