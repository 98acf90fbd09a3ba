//! Local tch backend.
