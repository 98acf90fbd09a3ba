//! TODO(llm): cache.
