//! FRet files in: the trainer's readers of the sets the file sinks ([`super::sink`]) write, and of FRet
//! sets from elsewhere.
//!
//! - JSONL: one [`Change`] record or bare [`fretflow_records::Example`] per line ([`Change::from_json`]).
//! - Parquet: fretflow's own change and snapshot files carry each example whole as JSON in the `example`
//!   column (next to flat columns for other tools), and a change file `op`, `key` and `time`; such a row is
//!   read from those columns. A row of any other file is converted to JSON by column name (nested groups
//!   and lists as objects and arrays) and read like a JSONL line.
//!
//! Every error names the file and its line or row.
use super::{jsonl, InputError};
use crate::contain::contained;
use fretflow_records::Change;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{Map, Value};
use std::path::Path;

/// Reads a FRet JSONL file (examples or change records), failing at the first bad line with file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Change>, InputError> {
    jsonl::records::<Value>(path)?
        .map(|r| {
            let (line, value) = r?;
            Change::from_json(value).map_err(|message| InputError::Malformed {
                path: path.to_path_buf(),
                line,
                message,
            })
        })
        .collect()
}

/// Reads a FRet Parquet file (see the module docs), failing at the first bad row with file and row.
pub fn read_parquet(path: &Path) -> Result<Vec<Change>, InputError> {
    let malformed = |line: usize, message: String| InputError::Malformed { path: path.to_path_buf(), line, message };
    let file = std::fs::File::open(path).map_err(|source| InputError::Open { path: path.to_path_buf(), source })?;
    // The parquet crate panics on some corrupt pages: contained, that is an error naming the file.
    contained(|| {
        let reader = SerializedFileReader::new(file).map_err(|e| malformed(0, e.to_string()))?;
        let rows = reader.get_row_iter(None).map_err(|e| malformed(0, e.to_string()))?;
        let mut changes = Vec::new();
        for (k, row) in rows.enumerate() {
            let row = row.map_err(|e| malformed(k + 1, format!("row {}: {e}", k + 1)))?;
            let change = row_change(row_to_json(&row)).map_err(|m| malformed(k + 1, format!("row {}: {m}", k + 1)))?;
            changes.push(change);
        }
        Ok(changes)
    })
    .unwrap_or_else(|panic| Err(malformed(0, format!("damaged file: {panic}"))))
}

/// One row as a change: from its `example` JSON text (and `op`, `key`, `time`) when it has one, otherwise
/// from all its columns.
fn row_change(mut row: Value) -> Result<Change, String> {
    let Some(object) = row.as_object_mut() else { return Change::from_json(row) };
    let Some(example) = object.get("example").cloned() else { return Change::from_json(row) };
    let example = match example {
        Value::String(text) => serde_json::from_str::<Value>(&text).map_err(|e| format!("column `example`: {e}"))?,
        other => other,
    };
    if !object.contains_key("op") {
        return Change::from_json(example);
    }
    let mut record = Map::new();
    for field in ["op", "key", "time"] {
        if let Some(value) = object.remove(field) {
            record.insert(field.to_owned(), value);
        }
    }
    if !example.is_null() {
        record.insert("example".to_owned(), example);
    }
    Change::from_json(Value::Object(record))
}

fn row_to_json(row: &Row) -> Value {
    Value::Object(
        row.get_column_iter().map(|(name, field)| (name.clone(), field_to_json(field))).collect::<Map<_, _>>(),
    )
}

fn field_to_json(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(x) => Value::from(*x),
        Field::Short(x) => Value::from(*x),
        Field::Int(x) => Value::from(*x),
        Field::Long(x) => Value::from(*x),
        Field::UByte(x) => Value::from(*x),
        Field::UShort(x) => Value::from(*x),
        Field::UInt(x) => Value::from(*x),
        Field::ULong(x) => Value::from(*x),
        Field::Float(x) => Value::from(*x),
        Field::Double(x) => Value::from(*x),
        Field::Str(s) => Value::String(s.clone()),
        Field::Group(row) => row_to_json(row),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_to_json).collect()),
        Field::MapInternal(map) => Value::Object(
            map.entries().iter().map(|(k, v)| (field_to_string(k), field_to_json(v))).collect::<Map<_, _>>(),
        ),
        other => Value::String(other.to_string()),
    }
}

fn field_to_string(field: &Field) -> String {
    match field {
        Field::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::sink::change_sink;
    use fretflow_records::{Example, Passage, Provenance};
    use std::collections::BTreeMap;

    fn example(id: &str) -> Example {
        Example {
            query_id: id.into(),
            task: "t".into(),
            query: format!("query {id}"),
            seed_id: "s".into(),
            positive: Passage { id: "s".into(), title: String::new(), text: "x".into() },
            negatives: vec![Passage { id: "n".into(), title: "T".into(), text: "y".into() }],
            ranking: Vec::new(),
            provenance: Provenance::default(),
        }
    }

    /// The trainer reads back exactly what the file sinks wrote, in both formats.
    #[test]
    fn fret_files_written_by_the_sinks_read_back_as_the_same_changes() {
        let dir = tempfile::tempdir().unwrap();
        let changes =
            vec![Change::upsert(example("q1"), 0), Change::upsert(example("q2"), 0), Change::retract("q1", 1)];
        let mut current = BTreeMap::new();
        current.insert("q2".to_string(), example("q2"));
        for name in ["c.jsonl", "c.parquet"] {
            let path = dir.path().join(name);
            let mut sink = change_sink(&path).unwrap();
            sink.write(&changes[..2]).unwrap();
            sink.write(&changes[2..]).unwrap();
            sink.finish(&current).unwrap();
            let read = if name.ends_with(".parquet") { read_parquet(&path) } else { read_jsonl(&path) };
            assert_eq!(read.unwrap(), changes, "{name}");
        }
    }

    #[test]
    fn a_bad_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let good = serde_json::to_string(&example("q1")).unwrap();
        std::fs::write(&path, format!("{good}\n{{\"op\":\"upsert\",\"key\":\"q9\"}}\n")).unwrap();
        let error = read_jsonl(&path).unwrap_err().to_string();
        assert!(error.contains("f.jsonl:2") && error.contains("has no 'example'"), "{error}");
    }
}
