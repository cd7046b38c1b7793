"""The stack's servers: how each is configured, started and found ready.

Each component writes its own configuration under the run directory (never
into the jar cache), so a second stack with another run directory and other
ports is fully isolated from the first.
"""

from __future__ import annotations

from deploy.local.components.base import Component, java, port_open
from deploy.local.components.cassandra import Cassandra
from deploy.local.components.kafka import Kafka, KafkaNode
from deploy.local.components.redis import Redis, RedisSentinel

__all__ = ["COMPONENTS", "Cassandra", "Component", "Kafka", "KafkaNode", "Redis", "RedisSentinel", "java", "port_open"]

COMPONENTS: dict[str, Component] = {c.name: c for c in (Redis(), Kafka(), Cassandra())}
