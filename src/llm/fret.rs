//! TODO(llm): fret.
