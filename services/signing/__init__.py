"""Signing: accepts a signature and answers only once Kafka holds it."""
