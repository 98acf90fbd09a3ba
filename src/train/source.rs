//! Where the trainer's FRet changes come from: a JSONL or Parquet file, an in-process channel (the
//! pipeline running the trainer itself), or the FRet Kafka topic ([`super::kafka::FretTopicSource`]).
//!
//! A source hands over whatever changes are available; the trainer applies them to its replay buffer
//! between optimizer steps, so training never waits on the stream once it has enough examples.
use super::TrainError;
use crate::connectors::file::fret::{read_jsonl, read_parquet};
use crate::connectors::{ChangeSink, SinkError};
use crate::records::{Change, Example};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// A stream of FRet changes.
pub trait ChangeSource {
    /// Changes available now; when there are none, waits up to `wait` for the first one.
    fn poll(&mut self, wait: Duration) -> Result<Vec<Change>, TrainError>;
    /// Whether the source will never produce another change (a file read to its end, a closed channel).
    fn is_finished(&self) -> bool;
    /// A short description for logs and checkpoint provenance.
    fn describe(&self) -> String;
}

/// A FRet file (`.jsonl` / `.json`: examples or change records; `.parquet`: one example per row, columns
/// named like the example's JSON fields). It is read whole on the first poll; a restarted trainer reads it
/// again and so rebuilds the same replay buffer.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    done: bool,
}

impl FileSource {
    /// A source reading `path` on first poll.
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), done: false }
    }
}

impl ChangeSource for FileSource {
    fn poll(&mut self, _wait: Duration) -> Result<Vec<Change>, TrainError> {
        if self.done {
            return Ok(Vec::new());
        }
        let is_parquet = self.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        let changes = if is_parquet { read_parquet(&self.path)? } else { read_jsonl(&self.path)? };
        self.done = true;
        tracing::info!(path = %self.path.display(), changes = changes.len(), "Read FRet file.");
        Ok(changes)
    }

    fn is_finished(&self) -> bool {
        self.done
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// A channel from a running pipeline to an in-process trainer: the pipeline writes its FRet change
/// stream into the [`ChannelFeed`] (one of its change sinks) and the trainer reads it from the
/// [`ChannelSource`], which finishes when the pipeline's input has ended.
pub fn channel() -> (ChannelFeed, ChannelSource) {
    let (tx, rx) = std::sync::mpsc::channel();
    (ChannelFeed { tx: Some(tx) }, ChannelSource::new(rx))
}

/// The pipeline's side of [`channel`]: a change sink that forwards each change, as the typed record, to
/// the trainer. Fails (stopping the pipeline) once the trainer has stopped.
#[derive(Debug)]
pub struct ChannelFeed {
    tx: Option<Sender<Change>>,
}

impl ChangeSink for ChannelFeed {
    fn write(&mut self, changes: &[Change]) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| "the trainer feed was already closed. This is a bug.".to_string())?;
        for change in changes {
            tx.send(change.clone())
                .map_err(|_| "the in-process trainer has stopped (its error follows)".to_string())?;
        }
        Ok(())
    }

    fn finish(&mut self, _current: &BTreeMap<String, Example>) -> Result<(), SinkError> {
        // Closing the channel tells the trainer that the input has ended.
        self.tx = None;
        Ok(())
    }
}

/// Changes sent over a channel by the in-process pipeline.
#[derive(Debug)]
pub struct ChannelSource {
    rx: Receiver<Change>,
    closed: bool,
}

impl ChannelSource {
    /// A source draining `rx`; finished when every sender is dropped.
    pub fn new(rx: Receiver<Change>) -> Self {
        Self { rx, closed: false }
    }
}

impl ChangeSource for ChannelSource {
    fn poll(&mut self, wait: Duration) -> Result<Vec<Change>, TrainError> {
        let mut out = Vec::new();
        match self.rx.recv_timeout(wait) {
            Ok(c) => out.push(c),
            Err(RecvTimeoutError::Timeout) => return Ok(out),
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                return Ok(out);
            }
        }
        out.extend(self.rx.try_iter());
        Ok(out)
    }

    fn is_finished(&self) -> bool {
        self.closed
    }

    fn describe(&self) -> String {
        "in-process channel".to_string()
    }
}
