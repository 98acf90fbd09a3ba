//! `fretflow run` on Kafka and `fretflow kafka passthrough`.
//!
//! - [`passthrough`]: source → transform → sink on timely workers, on the pipelines' driver loop
//!   ([`crate::pipeline::driver`]), with [`passthrough::Identity`] as the transform that proves the
//!   connectors.
//! - [`fret`]: the FRet dataflow as that transform.
//! - [`run`]: `fretflow run` on a Kafka pipeline: replays the input on every start, keeps the consumer
//!   group's offsets as progress markers.
//! - [`timely`]: the Kafka sink as a timely operator that holds each epoch until the broker acknowledged
//!   it, so a probe after it says which epochs may be committed.
//!
//! Delivery is at-least-once: after a crash the records since the last commit are read again and their
//! outputs written again; on a compacted topic keyed by query id that converges to the same state.
pub mod fret;
pub mod passthrough;
pub mod run;
pub mod timely;
