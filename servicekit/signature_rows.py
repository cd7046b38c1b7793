"""Where a signature's row lives in Cassandra: the layout of the system of
record, shared by the tally (its only writer and reader) and the schema
migration that created it (pure: no store).

The partition key is (petition_id, shard, bucket): shard is the Kafka
partition the signature came through (the tally's unit of work, so one
consumer batch writes few partitions), bucket a stable hash of the signer
pseudonym. A petition of N signatures over P Kafka partitions then has
P x SIGNATURE_BUCKETS partitions of about N / (P x SIGNATURE_BUCKETS) rows:
10 million signatures over 6 partitions make partitions of about 26,000
rows (some 6 MB), where (petition_id, shard) alone made them 1.7 million.
A signer's row is still one partition read: its shard comes with the
event (or is any of P), its bucket from the pseudonym alone.

SIGNATURE_BUCKETS is part of the schema, not a setting: rows written under
one value are not found under another, so changing it needs a new table
and a data migration, as `petitions migrate` did from the old `signatures`
table (services/migrations.py).
"""

from __future__ import annotations

import hashlib

SIGNATURES_TABLE = "signatures_by_bucket"
# The table before buckets: PRIMARY KEY ((petition_id, shard), signer).
# `petitions migrate` copies it into SIGNATURES_TABLE while it exists.
UNBUCKETED_SIGNATURES_TABLE = "signatures"

SIGNATURE_BUCKETS = 64
BUCKETS: tuple[int, ...] = tuple(range(SIGNATURE_BUCKETS))


def signature_bucket(signer: str) -> int:
    """The signer's bucket: the same in every process and every release
    (an unkeyed BLAKE2b of the pseudonym; Python's hash() is salted per
    process), and independent of the Kafka partition (which hashes
    SHA-256(petition, signer) with murmur2), so every bucket of every shard
    fills evenly."""
    digest = hashlib.blake2b(signer.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SIGNATURE_BUCKETS
