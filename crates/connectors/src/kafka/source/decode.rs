//! Passage messages to records: key = passage id, value = JSON `{id, title?, text}` (BEIR's `_id` is
//! accepted for `id`), null value (tombstone) = delete. A message that breaks these rules becomes a
//! [`DecodeError`] value that travels on to the dead-letter topic; decoding never panics.
use fretflow_records::{Passage, PassageEvent};
use serde::{Deserialize, Serialize};

/// Why a message is not a valid passage change. [`DecodeError::reason`] is the stable code written to the
/// dead-letter topic's `fretflow.error` header; the `Display` text goes to `fretflow.error.message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DecodeError {
    /// The value is larger than `max_message_bytes`.
    #[error("value of {bytes} bytes exceeds the limit of {limit} bytes")]
    Oversize {
        /// Size of the value.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The value is not a JSON object.
    #[error("value is not a JSON object: {message}")]
    NotJson {
        /// The parser's message (line and column).
        message: String,
    },
    /// The JSON has no usable `id` (missing, not a string, or empty).
    #[error("value has no `id` (a non-empty string) {detail}")]
    MissingId {
        /// What was found instead.
        detail: String,
    },
    /// A field has the wrong type (e.g. `text` is a number).
    #[error("passage '{id}': field `{field}` {message}")]
    BadField {
        /// The passage id.
        id: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// `text` is missing or blank.
    #[error("passage '{id}' has an empty `text`")]
    EmptyText {
        /// The passage id.
        id: String,
    },
    /// The key is not UTF-8.
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    /// The key and the value's id differ.
    #[error("key '{key}' differs from the value's id '{id}'")]
    KeyMismatch {
        /// The message key.
        key: String,
        /// The `id` in the value.
        id: String,
    },
    /// A tombstone without a key deletes nothing.
    #[error("tombstone (null value) without a key")]
    TombstoneWithoutKey,
}

impl DecodeError {
    /// A stable, machine-readable code: `oversize`, `not_json`, `missing_id`, `bad_field`, `empty_text`,
    /// `key_not_utf8`, `key_mismatch`, `tombstone_without_key`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Oversize { .. } => "oversize",
            Self::NotJson { .. } => "not_json",
            Self::MissingId { .. } => "missing_id",
            Self::BadField { .. } => "bad_field",
            Self::EmptyText { .. } => "empty_text",
            Self::KeyNotUtf8 => "key_not_utf8",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::TombstoneWithoutKey => "tombstone_without_key",
        }
    }
}

/// Where a message came from: `topic/partition/offset`, the `origin` of its event and dead letter.
pub fn origin(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// Decodes one message into the event it carries (an upsert or a delete of one passage), with `seq` the
/// message's offset and `origin` where it came from ([`origin`]). `max_bytes` bounds the value's size.
pub fn decode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    max_bytes: usize,
    seq: u64,
    origin: &str,
) -> Result<PassageEvent, DecodeError> {
    let event = |id: String, passage: Option<Passage>| PassageEvent { id, seq, passage, origin: origin.to_owned() };
    let key = match key {
        Some(bytes) => Some(std::str::from_utf8(bytes).map_err(|_| DecodeError::KeyNotUtf8)?),
        None => None,
    };
    let Some(value) = value else {
        return match key {
            Some(id) if !id.is_empty() => Ok(event(id.to_owned(), None)),
            _ => Err(DecodeError::TombstoneWithoutKey),
        };
    };
    if value.len() > max_bytes {
        return Err(DecodeError::Oversize { bytes: value.len(), limit: max_bytes });
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(value).map_err(|e| DecodeError::NotJson { message: e.to_string() })?;
    let id = match object.get("id").or_else(|| object.get("_id")) {
        Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
        Some(other) => return Err(DecodeError::MissingId { detail: format!("(found {other})") }),
        None => return Err(DecodeError::MissingId { detail: "(no such field)".into() }),
    };
    if let Some(key) = key {
        if key != id {
            return Err(DecodeError::KeyMismatch { key: key.to_owned(), id });
        }
    }
    let string_field = |field: &str| -> Result<Option<String>, DecodeError> {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(DecodeError::BadField {
                id: id.clone(),
                field: field.to_owned(),
                message: format!("must be a string, found {other}"),
            }),
        }
    };
    let title = string_field("title")?.unwrap_or_default();
    let text = string_field("text")?.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(DecodeError::EmptyText { id });
    }
    Ok(event(id.clone(), Some(Passage { id, title, text })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(key: Option<&str>, value: Option<&str>) -> &'static str {
        decode(key.map(str::as_bytes), value.map(str::as_bytes), 64, 0, "t/0/0").unwrap_err().reason()
    }

    #[test]
    fn upsert_with_and_without_title_and_beir_id() {
        let got = decode(Some(b"p1"), Some(br#"{"id":"p1","title":"T","text":"x"}"#), 64, 5, "t/0/5").unwrap();
        let passage = Passage { id: "p1".into(), title: "T".into(), text: "x".into() };
        assert_eq!(got, PassageEvent { id: "p1".into(), seq: 5, passage: Some(passage), origin: "t/0/5".into() });
        let got = decode(None, Some(br#"{"_id":"p2","text":"y"}"#), 64, 6, "t/0/6").unwrap();
        assert_eq!(got.id, "p2");
    }

    #[test]
    fn tombstone_is_delete_of_key() {
        let delete = PassageEvent { id: "p1".into(), seq: 2, passage: None, origin: origin("t", 1, 2) };
        assert_eq!(decode(Some(b"p1"), None, 64, 2, &origin("t", 1, 2)).unwrap(), delete);
        assert_eq!(reason(None, None), "tombstone_without_key");
    }

    #[test]
    fn each_malformed_message_has_its_reason() {
        assert_eq!(reason(Some("a"), Some("not json")), "not_json");
        assert_eq!(reason(Some("a"), Some("[1,2]")), "not_json");
        assert_eq!(reason(Some("a"), Some(r#"{"text":"x"}"#)), "missing_id");
        assert_eq!(reason(Some("a"), Some(r#"{"id":7,"text":"x"}"#)), "missing_id");
        assert_eq!(reason(Some("a"), Some(r#"{"id":"a","text":"  "}"#)), "empty_text");
        assert_eq!(reason(Some("a"), Some(r#"{"id":"a"}"#)), "empty_text");
        assert_eq!(reason(Some("a"), Some(r#"{"id":"a","text":3}"#)), "bad_field");
        assert_eq!(reason(Some("a"), Some(r#"{"id":"b","text":"x"}"#)), "key_mismatch");
        assert_eq!(reason(Some("a"), Some(&format!(r#"{{"id":"a","text":"{}"}}"#, "x".repeat(80)))), "oversize");
        let err = decode(Some(&[0xff, 0xfe]), Some(b"{}"), 64, 0, "t/0/0").unwrap_err();
        assert_eq!(err.reason(), "key_not_utf8");
    }

    #[test]
    fn messages_name_the_passage() {
        let err = decode(Some(b"a"), Some(br#"{"id":"a","text":""}"#), 64, 0, "t/0/0").unwrap_err();
        assert!(err.to_string().contains("'a'"), "{err}");
    }
}
