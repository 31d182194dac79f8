"""Ingestion: source -> Kafka (producer), Kafka -> lake (consumer), and dead letters."""
