"""The tally consumer as a chain of steps, one per job.

A partition's batch goes through them in this order (see chain.py, where
they are composed): in flight (one batch per partition; a second one is
refused, and the consume loop pauses that partition), decode, dead-letter
(with per-partition limits), archive in Cassandra, count in Redis (with the
self-healing rebuild), check thresholds, commit. Every step has the same
small protocol (protocol.py), modelled on the processing strategies of
getsentry/arroyo: submit, poll, join with a timeout, close.
"""
