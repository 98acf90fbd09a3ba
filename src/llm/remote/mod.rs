//! OpenAI-compatible remote backend.
