//! Parquet files of embeddings: a column `id` (utf8) and a column `embedding`
//! (`FixedSizeList<Float32, dim>`), written in row groups as batches arrive.
use super::InputError;
use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A Parquet file that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The file could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding or writing failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Writes `(id, embedding)` rows to a Parquet file.
pub struct EmbeddingParquetWriter {
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    dim: usize,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddingParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingParquetWriter").field("path", &self.path).field("dim", &self.dim).finish()
    }
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

impl EmbeddingParquetWriter {
    /// Creates (or truncates) `path` for vectors of `dim` floats, creating parent directories.
    pub fn create(path: &Path, dim: usize) -> Result<Self, OutputError> {
        let create = |source| OutputError::Create { path: path.to_path_buf(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(create)?;
        }
        let file = File::create(path).map_err(create)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("embedding", DataType::FixedSizeList(item_field(), dim as i32), false),
        ]));
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| write_error(path, e))?;
        Ok(Self { writer, schema, dim, path: path.to_path_buf() })
    }

    /// Appends rows: `ids[i]` with `embeddings[i * dim .. (i + 1) * dim]`.
    pub fn write(&mut self, ids: &[String], embeddings: &[f32]) -> Result<(), OutputError> {
        if embeddings.len() != ids.len() * self.dim {
            let message = format!("{} ids but {} floats (dim {})", ids.len(), embeddings.len(), self.dim);
            return Err(OutputError::Write { path: self.path.clone(), message });
        }
        let values: ArrayRef = Arc::new(Float32Array::from(embeddings.to_vec()));
        let list = FixedSizeListArray::try_new(item_field(), self.dim as i32, values, None)
            .map_err(|e| write_error(&self.path, e))?;
        let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(ids.to_vec())), Arc::new(list)];
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| write_error(&self.path, e))?;
        self.writer.write(&batch).map_err(|e| write_error(&self.path, e))
    }

    /// Writes the footer and closes the file.
    pub fn finish(self) -> Result<(), OutputError> {
        self.writer.close().map(|_| ()).map_err(|e| write_error(&self.path, e))
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Write { path: path.to_path_buf(), message: e.to_string() }
}

/// Reads every `(id, embedding)` row of a file written by [`EmbeddingParquetWriter`].
pub fn read_embeddings(path: &Path) -> Result<Vec<(String, Vec<f32>)>, InputError> {
    let file = File::open(path).map_err(|source| InputError::Open { path: path.to_path_buf(), source })?;
    let malformed = |message: String| InputError::Malformed { path: path.to_path_buf(), line: 0, message };
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| malformed(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| malformed(e.to_string()))?;
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| malformed(format!("no column '{name}'")));
        let ids = column("id")?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| malformed("column 'id' is not utf8".into()))?;
        let lists = column("embedding")?
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| malformed("column 'embedding' is not a fixed-size list".into()))?;
        let values = lists
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| malformed("column 'embedding' does not hold float32".into()))?;
        let dim = lists.value_length() as usize;
        for row in 0..batch.num_rows() {
            let start = lists.value_offset(row) as usize;
            rows.push((ids.value(row).to_string(), values.values()[start..start + dim].to_vec()));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_rows_read_back_with_their_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/e.parquet");
        let mut writer = EmbeddingParquetWriter::create(&path, 2).unwrap();
        writer.write(&["a".into(), "b".into()], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        writer.write(&["c".into()], &[5.0, 6.0]).unwrap();
        writer.finish().unwrap();
        let rows = read_embeddings(&path).unwrap();
        assert_eq!(
            rows,
            vec![("a".into(), vec![1.0, 2.0]), ("b".into(), vec![3.0, 4.0]), ("c".into(), vec![5.0, 6.0])]
        );
        let file = File::open(&path).unwrap();
        let schema = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().schema().clone();
        assert_eq!(schema.field(1).data_type(), &DataType::FixedSizeList(item_field(), 2));
    }

    #[test]
    fn mismatched_lengths_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EmbeddingParquetWriter::create(&dir.path().join("e.parquet"), 3).unwrap();
        let err = writer.write(&["a".into()], &[1.0, 2.0]).unwrap_err().to_string();
        assert!(err.contains("e.parquet") && err.contains("dim 3"), "{err}");
    }
}
