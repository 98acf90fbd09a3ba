//! The FRet dataflow (timely + differential).
