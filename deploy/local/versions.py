"""The pinned versions of the local stack: the one place they are set."""

from __future__ import annotations

# Kafka 3.9.x: KRaft on Java 17, and the broker line aiokafka is tested with.
KAFKA = "3.9.2"
# The Kafka 3.9 broker declares slf4j 1.7 and ships no backend; these are its
# reload4j binding and backend.
SLF4J = "1.7.36"
RELOAD4J = "1.2.26"
CASSANDRA = "5.0.9"
# Redis comes from the Debian package, so its version is Debian's (7.0.x on
# bookworm); the stack reports it on start.
