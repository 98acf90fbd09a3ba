//! The pipeline drivers: they run the FRet dataflow ([`crate::dataflow`]) between connectors
//! ([`crate::connectors`]). Only this layer knows both: the dataflow knows no storage, the connectors know
//! no dataflow.
//!
//! - [`kafka`]: the Kafka driver (passage topic in, compacted FRet topic and dead-letter topic out), with
//!   restarts that replay the input, and the timely operators that hold each epoch until the broker has
//!   acknowledged it.
pub mod kafka;
