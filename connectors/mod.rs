//! Sources and sinks: bytes in and out of a system (storage) kept apart from records to and from bytes
//! (format), so any storage pairs with any format.
pub mod file;
pub mod kafka;
