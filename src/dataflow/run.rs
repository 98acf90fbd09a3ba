//! Driver: runs a pipeline config with file sources and sinks.
