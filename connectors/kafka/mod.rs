//! Kafka source and sink (rdkafka).
