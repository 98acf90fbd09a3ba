//! Retrieval evaluation on BEIR-layout datasets with trec_eval-compatible metrics.
