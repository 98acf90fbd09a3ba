//! File sinks of the FRet set: the change stream (JSONL or Parquet), snapshots of the current set, and
//! dead letters (JSONL).
//!
//! Storage and format are separate: [`create_file`] and [`AtomicFile`] provide the bytes' destination (a
//! file written as it goes, or one that appears complete under its name only when done); the JSONL and
//! Parquet encoders turn records into bytes for any `Write`.
//!
//! Parquet change files are valid once closed, at the end of the run; JSONL files are flushed after
//! every time, so `tail -f` follows them live.
use crate::{ChangeSink, DeadLetterSink, SinkError};
use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use fretflow_records::{Change, ChangeOp, DeadLetter, Example};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Storage: creates (or truncates) `path`, creating its parent directories.
pub fn create_file(path: &Path) -> Result<File, SinkError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create directory {}: {e}", parent.display()))?;
    }
    File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Storage: a file written under a temporary name and renamed into place by [`AtomicFile::commit`], so
/// readers never see a half-written snapshot.
#[derive(Debug)]
pub struct AtomicFile {
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing `target`; returns the handle and the file to write into.
    pub fn create(target: &Path) -> Result<(Self, File), SinkError> {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let temp = target.with_file_name(name);
        let file = create_file(&temp)?;
        Ok((Self { temp, target: target.into() }, file))
    }

    /// Moves the finished file into place.
    pub fn commit(self) -> Result<(), SinkError> {
        std::fs::rename(&self.temp, &self.target)
            .map_err(|e| format!("cannot move {} to {}: {e}", self.temp.display(), self.target.display()))
    }
}

/// Format: the change stream as JSON Lines, `{op, key, time, example?}` per line.
#[derive(Debug)]
pub struct JsonlChanges {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlChanges {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        Ok(Self { path: path.into(), out: BufWriter::new(create_file(path)?) })
    }
}

impl ChangeSink for JsonlChanges {
    fn write(&mut self, changes: &[Change]) -> Result<(), SinkError> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        for change in changes {
            serde_json::to_writer(&mut self.out, change).map_err(|e| fail(e.into()))?;
            self.out.write_all(b"\n").map_err(fail)?;
        }
        self.out.flush().map_err(fail)
    }

    fn finish(&mut self, _current: &BTreeMap<String, Example>) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// Columns describing an example, shared by change and snapshot files; null for a retraction. After the
/// example's own fields and its whole JSON (`example`), the columns a sentence-transformers trainer takes,
/// as fretflow's trainer encodes them: `anchor` (`task: {task} | query: {query}`), `positive` and
/// `negative` (the first hard negative, null without one) as `title text`, `negatives` (all of them), and
/// the provenance: `generator`, `judge` (backend:model) and `embedder`. `datasets.load_dataset("parquet")`
/// reads them (tests/fixtures/fret/check_datasets.py).
fn example_fields() -> Vec<Field> {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    vec![
        text("task"),
        text("query"),
        text("seed_id"),
        text("positive_id"),
        text("positive_title"),
        text("positive_text"),
        Field::new("negative_ids", list(), true),
        Field::new("negative_texts", list(), true),
        text("example"),
        text("anchor"),
        text("positive"),
        text("negative"),
        Field::new("negatives", list(), true),
        text("generator"),
        text("judge"),
        text("embedder"),
    ]
}

/// Builds the example columns of `rows`, in the order of [`example_fields`].
fn example_columns<'a>(rows: impl Iterator<Item = Option<&'a Example>>) -> Result<Vec<ArrayRef>, SinkError> {
    // The string columns before the lists; `example` and the trainer's columns after them.
    let mut head: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut tail: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let mut provenance: Vec<StringBuilder> = (0..3).map(|_| StringBuilder::new()).collect();
    let mut negative_ids = ListBuilder::new(StringBuilder::new());
    let mut negative_texts = ListBuilder::new(StringBuilder::new());
    let mut negatives = ListBuilder::new(StringBuilder::new());
    for row in rows {
        match row {
            Some(e) => {
                let values = [&e.task, &e.query, &e.seed_id, &e.positive.id, &e.positive.title, &e.positive.text];
                for (builder, value) in head.iter_mut().zip(values) {
                    builder.append_value(value);
                }
                for n in &e.negatives {
                    negative_ids.values().append_value(&n.id);
                    negative_texts.values().append_value(&n.text);
                    negatives.values().append_value(n.embedding_text());
                }
                negative_ids.append(true);
                negative_texts.append(true);
                negatives.append(true);
                let json = serde_json::to_string(e).map_err(|e| format!("cannot encode an example: {e}"))?;
                tail[0].append_value(json);
                tail[1].append_value(e.query_text());
                tail[2].append_value(e.positive.embedding_text());
                tail[3].append_option(e.negatives.first().map(|n| n.embedding_text()));
                let p = &e.provenance;
                for (builder, value) in provenance.iter_mut().zip([&p.generator.model, &p.judge.model, &p.embedder]) {
                    builder.append_value(value);
                }
            }
            None => {
                head.iter_mut().chain(tail.iter_mut()).chain(provenance.iter_mut()).for_each(|b| b.append_null());
                negative_ids.append(false);
                negative_texts.append(false);
                negatives.append(false);
            }
        }
    }
    let strings = |builders: Vec<StringBuilder>| builders.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut columns: Vec<ArrayRef> = strings(head).collect();
    columns.push(Arc::new(negative_ids.finish()));
    columns.push(Arc::new(negative_texts.finish()));
    columns.extend(strings(tail));
    columns.push(Arc::new(negatives.finish()));
    columns.extend(strings(provenance));
    Ok(columns)
}

fn parquet_writer(path: &Path, file: File, schema: SchemaRef) -> Result<ArrowWriter<File>, SinkError> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Format: the change stream as Parquet: `op`, `key`, `time`, then the example columns (`task`, `query`,
/// `seed_id`, `positive_*`, `negative_ids`, `negative_texts`, the whole `example` as JSON, and the trainer's
/// and provenance columns of `example_fields`), null for retractions.
pub struct ParquetChanges {
    path: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
}

impl std::fmt::Debug for ParquetChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetChanges").field("path", &self.path).finish()
    }
}

impl ParquetChanges {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let mut fields = vec![
            Field::new("op", DataType::Utf8, false),
            Field::new("key", DataType::Utf8, false),
            Field::new("time", DataType::UInt64, false),
        ];
        fields.extend(example_fields());
        let schema = Arc::new(Schema::new(fields));
        let writer = parquet_writer(path, create_file(path)?, Arc::clone(&schema))?;
        Ok(Self { path: path.into(), schema, writer: Some(writer) })
    }
}

impl ChangeSink for ParquetChanges {
    fn write(&mut self, changes: &[Change]) -> Result<(), SinkError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(format!("{} is already closed", self.path.display()));
        };
        let mut op = StringBuilder::new();
        let mut key = StringBuilder::new();
        let mut time = UInt64Builder::new();
        for c in changes {
            op.append_value(match c.op {
                ChangeOp::Upsert => "upsert",
                ChangeOp::Retract => "retract",
            });
            key.append_value(&c.key);
            time.append_value(c.time);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(op.finish()), Arc::new(key.finish()), Arc::new(time.finish())];
        columns.extend(example_columns(changes.iter().map(|c| c.example.as_ref()))?);
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| format!("cannot encode changes for {}: {e}. This is a bug.", self.path.display()))?;
        writer.write(&batch).map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    fn finish(&mut self, _current: &BTreeMap<String, Example>) -> Result<(), SinkError> {
        match self.writer.take() {
            Some(writer) => {
                writer.close().map(|_| ()).map_err(|e| format!("cannot close {}: {e}", self.path.display()))
            }
            None => Ok(()),
        }
    }
}

/// A snapshot of the current FRet set, written (atomically) when the run ends: JSONL (one example per
/// line) or Parquet (`key` and the example columns), by the file's extension.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    parquet: bool,
}

impl Snapshot {
    /// A snapshot to be written at `path`.
    pub fn new(path: &Path) -> Self {
        Self { path: path.into(), parquet: path.extension().is_some_and(|e| e == "parquet") }
    }

    fn write_jsonl(&self, file: File, current: &BTreeMap<String, Example>) -> Result<(), SinkError> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let mut out = BufWriter::new(file);
        for example in current.values() {
            serde_json::to_writer(&mut out, example).map_err(|e| fail(e.into()))?;
            out.write_all(b"\n").map_err(fail)?;
        }
        out.flush().map_err(fail)
    }

    fn write_parquet(&self, file: File, current: &BTreeMap<String, Example>) -> Result<(), SinkError> {
        let mut fields = vec![Field::new("key", DataType::Utf8, false)];
        fields.extend(example_fields());
        let schema = Arc::new(Schema::new(fields));
        let mut key = StringBuilder::new();
        current.keys().for_each(|k| key.append_value(k));
        let mut columns: Vec<ArrayRef> = vec![Arc::new(key.finish())];
        columns.extend(example_columns(current.values().map(Some))?);
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
            .map_err(|e| format!("cannot encode the snapshot {}: {e}. This is a bug.", self.path.display()))?;
        let mut writer = parquet_writer(&self.path, file, schema)?;
        writer.write(&batch).map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        writer.close().map(|_| ()).map_err(|e| format!("cannot close {}: {e}", self.path.display()))
    }
}

impl ChangeSink for Snapshot {
    fn write(&mut self, _changes: &[Change]) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, current: &BTreeMap<String, Example>) -> Result<(), SinkError> {
        let (atomic, file) = AtomicFile::create(&self.path)?;
        if self.parquet {
            self.write_parquet(file, current)?;
        } else {
            self.write_jsonl(file, current)?;
        }
        atomic.commit()
    }
}

/// A change-stream sink for `path`, Parquet or JSONL by its extension.
pub fn change_sink(path: &Path) -> Result<Box<dyn ChangeSink>, SinkError> {
    if path.extension().is_some_and(|e| e == "parquet") {
        Ok(Box::new(ParquetChanges::create(path)?))
    } else {
        Ok(Box::new(JsonlChanges::create(path)?))
    }
}

/// Dead letters as JSON Lines, flushed after every batch.
#[derive(Debug)]
pub struct JsonlDeadLetters {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlDeadLetters {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        Ok(Self { path: path.into(), out: BufWriter::new(create_file(path)?) })
    }
}

impl DeadLetterSink for JsonlDeadLetters {
    fn write(&mut self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        for letter in letters {
            serde_json::to_writer(&mut self.out, letter).map_err(|e| fail(e.into()))?;
            self.out.write_all(b"\n").map_err(fail)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
