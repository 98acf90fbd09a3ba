//! TODO(llm): prompts.
