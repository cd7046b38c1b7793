"""The pinned versions of the local stack: the one place they are set."""

from __future__ import annotations

# Kafka 4.3.1: what Strimzi 1.2.0 runs in production (its default, metadata
# version 4.3-IV0), so the local stack and the tests run the same broker.
# aiokafka 0.14.0 negotiates each request's version from the broker's
# ApiVersions answer, and every version it needs is still served by 4.x
# (tests/test_kafka4_*.py and the broker tests prove it on this stack).
KAFKA = "4.3.1"
# Kafka 4 logs through log4j2: the broker brings log4j-api and log4j-core
# 2.25.4 itself but still declares slf4j-api 1.7.36, so its slf4j binding is
# log4j-slf4j-impl (the slf4j 1.x one, not log4j-slf4j2-impl), of the same
# release as the core it binds to.
LOG4J = "2.25.4"
CASSANDRA = "5.0.9"
# Redis comes from the Debian package, so its version is Debian's (7.0.x on
# bookworm); the stack reports it on start.
