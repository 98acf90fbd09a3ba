//! Records that flow between stages (see DESIGN.md, "Records").
use serde::{Deserialize, Serialize};

/// A passage of the corpus, keyed by `id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Passage {
    /// Unique id of the passage within its corpus (BEIR files name it `_id`).
    #[serde(alias = "_id")]
    pub id: String,
    /// Optional title; empty when absent.
    #[serde(default)]
    pub title: String,
    /// The passage text.
    pub text: String,
}

impl Passage {
    /// The text an encoder sees: `title + " " + text` when there is a title (the BEIR convention),
    /// otherwise the text alone.
    pub fn embedding_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}
