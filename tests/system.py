"""A client for the whole system under test: every call goes through the
public interfaces (the dev provider's HTTP, the services' gRPC) or reads the
real stores, as an auditor would."""

from __future__ import annotations

import asyncio
import email
import email.message
import json
import random
import re
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from cassandra.cluster import Session

from petitions.v1 import (
    events_pb2,
    identity_pb2,
    identity_pb2_grpc,
    petition_pb2,
    petitions_pb2,
    petitions_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
    tally_pb2,
    tally_pb2_grpc,
)
from servicekit.settings import CommonSettings
from servicekit.stores import cassandra_cluster_for, kafka_options
from tests.harness import Namespace
from tests.waiting import eventually


async def topic_partitions(
    bootstrap: str, topics: list[str], options: Mapping[str, Any] | None = None
) -> list[list[TopicPartition]]:
    """Each topic's partitions, as the broker describes them; `options` are
    kafka_options() of a secured cluster (its login), bootstrap wins."""
    admin = AIOKafkaAdminClient(**{**(options or {}), "bootstrap_servers": bootstrap})
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    by_name = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
    return [[TopicPartition(topic, p) for p in by_name.get(topic, [])] for topic in topics]


@dataclass(frozen=True)
class KafkaRecord:
    partition: int
    offset: int
    key: bytes
    value: bytes


class SystemClient:
    """The system of one namespace on the stores `stack` describes: the
    single local stack, or a replicated, authenticated cluster (every Kafka
    client it builds logs in with kafka_options(stack), Cassandra is reached
    as cassandra_cluster_for(stack) says)."""

    def __init__(self, namespace: Namespace, stack: CommonSettings):
        self.namespace = namespace
        self.stack = stack
        self.channels = {
            name: grpc.insecure_channel(namespace.address(name))
            for name in ("identity", "petitions", "signing", "tally")
        }
        self.identity = identity_pb2_grpc.IdentityStub(self.channels["identity"])
        self.signing = signing_pb2_grpc.SigningStub(self.channels["signing"])
        self.petitions = petitions_pb2_grpc.PetitionsStub(self.channels["petitions"])
        self._staff: dict[str, tuple[float, str]] = {}
        self.tally = tally_pb2_grpc.TallyStub(self.channels["tally"])
        self._cluster = cassandra_cluster_for(stack)
        self.cassandra: Session = self._cluster.connect(namespace.keyspace)
        self._personas: dict[str, tuple[str, str, str]] = {}
        # Every raw identity the tests used (subjects, names, emails): none
        # may ever be found in Kafka, Redis or Cassandra.
        self.raw_identities: set[str] = set()

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self._cluster.shutdown()

    @property
    def signatures_topic(self) -> str:
        return f"{self.namespace.topic_prefix}signatures"

    def kafka(self, bootstrap: str = "", **extra: Any) -> dict[str, Any]:
        """Arguments for an aiokafka client of this system's Kafka (its
        login when secured), or of another cluster at `bootstrap`, plus
        `extra`."""
        options = kafka_options(self.stack)
        if bootstrap:
            options["bootstrap_servers"] = bootstrap
        return {**options, **extra}

    # identity

    def id_token(
        self,
        persona: str,
        country: str = "FR",
        territory: str = "75",
        audience: str = "",
        *,
        identified: bool = False,
        birthdate: str = "1990-01-01",
        published_name: bool = False,
    ) -> str:
        """An ID token from the dev provider: the anonymous-mode one, or with
        identified=True the identified-mode one (name and birthdate).
        published_name: the token is for an author's or a staff member's
        credential, whose name is published by consent (an author's display
        name is petition content; staff act in their own name in the audit
        trail), so the privacy audit does not look for that name; the subject
        must still never be stored."""
        self.raw_identities.update({f"dev-persona:{persona}", persona})
        if not published_name:
            self.raw_identities.add(persona.title())
        body = json.dumps(
            {
                "persona": persona,
                "audience": audience or "petitions-test",
                "country": country,
                "territory": territory,
                "identified": identified,
                "birthdate": birthdate,
            }
        ).encode()
        provider = self.namespace.identified_devidp_url if identified else self.namespace.devidp_url
        request = urllib.request.Request(f"{provider}/dev/id-token", body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["id_token"])

    def credential(self, persona: str, country: str = "FR", territory: str = "75") -> identity_pb2.SignerCredential:
        reply: identity_pb2.SignerCredential = self.identity.ExchangeIdToken(
            identity_pb2.ExchangeIdTokenRequest(id_token=self.id_token(persona, country, territory)), timeout=10
        )
        self._personas[reply.claims.signer] = (persona, country, territory)
        return reply

    def credential_for_same(self, credential: identity_pb2.SignerCredential) -> identity_pb2.SignerCredential:
        """A fresh credential for the person who holds `credential`."""
        persona = self._personas[credential.claims.signer]
        return self.credential(*persona)

    def exchange(self, id_token: str, client_ip: str = "") -> identity_pb2.SignerCredential:
        reply: identity_pb2.SignerCredential = self.identity.ExchangeIdToken(
            identity_pb2.ExchangeIdTokenRequest(id_token=id_token, client_ip=client_ip), timeout=10
        )
        return reply

    def begin_email(
        self, email: str, country: str = "FR", territory: str = "75", client_ip: str = ""
    ) -> identity_pb2.BeginEmailVerificationResponse:
        self.raw_identities.add(email.strip())
        reply: identity_pb2.BeginEmailVerificationResponse = self.identity.BeginEmailVerification(
            identity_pb2.BeginEmailVerificationRequest(
                email=email, country=country, territory=territory, client_ip=client_ip
            ),
            timeout=15,
        )
        return reply

    def complete_email(self, verification_id: str, code: str, client_ip: str = "") -> identity_pb2.SignerCredential:
        reply: identity_pb2.SignerCredential = self.identity.CompleteEmailVerification(
            identity_pb2.CompleteEmailVerificationRequest(
                verification_id=verification_id, code=code, client_ip=client_ip
            ),
            timeout=10,
        )
        return reply

    def mail_to(self, address: str, timeout: float = 10.0) -> list[email.message.Message]:
        """Messages the dev SMTP sink received for address, oldest first."""

        def delivered() -> list[email.message.Message]:
            found = []
            for path in sorted(self.namespace.mail_dir.glob("*.eml")):
                message = email.message_from_bytes(path.read_bytes())
                if address in message.get_all("X-Delivered-To", []):
                    found.append(message)
            return found

        # An empty list after the timeout is an answer here (callers assert
        # on it with their own message), not a failure of the wait.
        try:
            return eventually(delivered, timeout)
        except AssertionError:
            return []

    def code_sent_to(self, address: str) -> str:
        """The one-time code in the newest message to address."""
        messages = self.mail_to(address)
        assert messages, f"no email reached {address}"
        payload = messages[-1].get_payload(decode=True)
        assert isinstance(payload, bytes)
        body = payload.decode()
        match = re.search(r"\b(\d{6})\b", body)
        assert match, f"no code in the email: {body!r}"
        return match.group(1)

    def email_credential(self, address: str, territory: str = "75") -> identity_pb2.SignerCredential:
        started = self.begin_email(address, territory=territory)
        return self.complete_email(started.verification_id, self.code_sent_to(address.strip()))

    def metrics(self, service: str) -> str:
        port = self.namespace.ports[f"{service}-metrics"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metric_value(self, service: str, sample: str) -> float:
        """The value of one sample, e.g. 'name{label="x"}'; 0 when absent."""
        for line in self.metrics(service).splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    # staff and petitions

    def staff_credential(self, persona: str = "staff-admin") -> str:
        """A staff credential of one of the session's staff personas
        (tests.harness.STAFF_PERSONAS), from identity, kept while valid."""
        cached = self._staff.get(persona)
        if cached is not None and cached[0] > time.time() + 30:
            return cached[1]
        reply: identity_pb2.StaffCredential = self.identity.ExchangeStaffIdToken(
            identity_pb2.ExchangeStaffIdTokenRequest(
                id_token=self.id_token(persona, identified=True, published_name=True)
            ),
            timeout=10,
        )
        self._staff[persona] = (reply.expires_at.ToNanoseconds() / 1e9, reply.token)
        return reply.token

    def author_credential(self, persona: str, birthdate: str = "1985-04-02") -> identity_pb2.AuthorCredential:
        """An author credential of an identified adult (see id_token's
        published_name)."""
        reply: identity_pb2.AuthorCredential = self.identity.ExchangeAuthorIdToken(
            identity_pb2.ExchangeAuthorIdTokenRequest(
                id_token=self.id_token(persona, identified=True, birthdate=birthdate, published_name=True)
            ),
            timeout=10,
        )
        return reply

    def author(self, persona: str) -> tuple[tuple[str, str | bytes], ...]:
        """gRPC metadata carrying an author credential."""
        return (("authorization", f"Bearer {self.author_credential(persona).token}"),)

    def staff(self, persona: str = "staff-admin") -> tuple[tuple[str, str | bytes], ...]:
        """gRPC metadata carrying a staff credential."""
        return (("authorization", f"Bearer {self.staff_credential(persona)}"),)

    def admin(self) -> tuple[tuple[str, str | bytes], ...]:
        """The metadata of an administrator (staff-admin)."""
        return self.staff("staff-admin")

    def create_petition(
        self, title: str = "A petition", *, open_now: bool = True, **fields: Any
    ) -> petition_pb2.Petition:
        """A petition created directly by an administrator, open by default."""
        petition_id = fields.pop("id", f"t-{uuid.uuid4().hex[:12]}")
        reply: petition_pb2.Petition = self.petitions.CreatePetition(
            petitions_pb2.CreatePetitionRequest(id=petition_id, title=title, open=open_now, **fields),
            metadata=self.admin(),
            timeout=30,
        )
        return reply

    # signing

    def sign(
        self, credential: str, petition_id: str, idempotency_key: str = "", client_ip: str = ""
    ) -> signing_pb2.SignResponse:
        """Signs; without a client_ip, from an address of its own (the test
        configuration limits Sign calls per address tightly)."""
        reply: signing_pb2.SignResponse = self.signing.Sign(
            signing_pb2.SignRequest(
                credential=credential,
                petition_id=petition_id,
                idempotency_key=idempotency_key or uuid.uuid4().hex,
                client_ip=client_ip or f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}",
            ),
            timeout=30,
        )
        return reply

    # tally

    def get_tally(
        self, petition_id: str, tally_stub: tally_pb2_grpc.TallyStub | None = None
    ) -> tally_pb2.PetitionTally:
        """GetTally from the session's tally, or from another tally process."""
        reply: tally_pb2.PetitionTally = (tally_stub or self.tally).GetTally(
            tally_pb2.GetTallyRequest(petition_id=petition_id), timeout=10
        )
        return reply

    def settled_tally(self, petition_id: str, timeout: float = 60.0) -> tally_pb2.PetitionTally:
        """The tally once every message in the log has been applied."""
        eventually(self.applied_everything, timeout, interval=0.2, message="tally has not applied the whole log")
        # Committed offsets move only after a batch is applied, so counts
        # read after this moment include it all.
        return self.fresh_tally(petition_id)

    def fresh_tally(
        self, petition_id: str, timeout: float = 10.0, *, tally_stub: tally_pb2_grpc.TallyStub | None = None
    ) -> tally_pb2.PetitionTally:
        """A tally read from the stores after this call began (tally serves
        reads from a short-lived cache)."""
        asked_at = time.time()

        def newer() -> tally_pb2.PetitionTally | None:
            tally = self.get_tally(petition_id, tally_stub)
            return tally if tally.as_of.ToNanoseconds() / 1e9 >= asked_at else None

        return eventually(newer, timeout, interval=0.05, message="tally served no read newer than the call")

    def applied_everything(self, *, topic: str = "", group: str = "") -> bool:
        """True when the tally's consumer group (or another group, on another
        signatures topic) has committed every message."""
        ends = self.end_offsets(topic)
        committed = self.committed_offsets(list(ends), topic=topic, group=group)
        return all(committed.get(p, 0) >= end for p, end in ends.items())

    # Kafka, read directly

    def end_offsets(self, topic: str = "") -> dict[int, int]:
        return asyncio.run(self._end_offsets(topic))

    def committed_offsets(self, partitions: list[int], *, topic: str = "", group: str = "") -> dict[int, int]:
        """A consumer group's committed offsets (0 where none), by default
        the session tally's on the signatures topic."""
        return asyncio.run(self._committed_offsets(partitions, topic, group))

    async def _end_offsets(self, topic: str = "") -> dict[int, int]:
        partitions = (
            await topic_partitions(self.stack.kafka_bootstrap, [topic or self.signatures_topic], self.kafka())
        )[0]
        consumer = AIOKafkaConsumer(**self.kafka())
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    async def _committed_offsets(self, partitions: list[int], topic: str = "", group: str = "") -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            **self.kafka(group_id=group or self.namespace.consumer_group, enable_auto_commit=False)
        )
        await consumer.start()
        try:
            result = {}
            for partition in partitions:
                committed = await consumer.committed(TopicPartition(topic or self.signatures_topic, partition))
                result[partition] = committed if committed is not None else 0
            return result
        finally:
            await consumer.stop()

    def read_record(self, partition: int, offset: int, *, bootstrap: str = "", topic: str = "") -> KafkaRecord:
        """One record of the signatures topic (or another topic, on another
        cluster), by position."""
        return asyncio.run(self._read_record(partition, offset, bootstrap, topic or self.signatures_topic))

    async def _read_record(self, partition: int, offset: int, bootstrap: str, topic: str) -> KafkaRecord:
        consumer = AIOKafkaConsumer(**self.kafka(bootstrap, enable_auto_commit=False))
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            record = await asyncio.wait_for(consumer.getone(tp), 20)
            return KafkaRecord(record.partition, record.offset, record.key or b"", record.value or b"")
        finally:
            await consumer.stop()

    def records_with_key(self, key: bytes, topic: str = "") -> list[KafkaRecord]:
        """Every record on a topic (signatures by default) with this key,
        reading every partition to its end."""
        return asyncio.run(self._records(topic or self.signatures_topic, key))

    def all_records(self, topic: str = "") -> list[KafkaRecord]:
        """Every record on a topic (signatures by default), every partition
        read from its beginning to the end it had when the call began."""
        return asyncio.run(self._records(topic or self.signatures_topic, None))

    async def _records(self, topic: str, key: bytes | None) -> list[KafkaRecord]:
        ends = await self._end_offsets(topic)
        consumer = AIOKafkaConsumer(**self.kafka(enable_auto_commit=False))
        await consumer.start()
        found: list[KafkaRecord] = []
        try:
            partitions = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            remaining = set(partitions)
            while remaining:
                batches = await consumer.getmany(timeout_ms=5000)
                if not batches:
                    raise AssertionError(f"could not read {remaining} to the end")
                for tp, records in batches.items():
                    found += [
                        KafkaRecord(r.partition, r.offset, r.key or b"", r.value or b"")
                        for r in records
                        if (key is None or r.key == key) and r.offset < ends[tp.partition]
                    ]
                    if records[-1].offset + 1 >= ends[tp.partition]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return found

    def share_petition(self, petition_id: str, bootstrap: str, topic_prefix: str) -> None:
        """Copies a petition's latest state to another Kafka's (or another
        prefix's) petition-state topic: signing and tally learn petitions
        only from their own petition-state topic, and the session's petitions
        service publishes on the session's."""
        states = self.records_with_key(petition_id.encode(), topic=f"{self.namespace.topic_prefix}petition-state")
        assert states, f"petition {petition_id} is not on the session's petition-state topic"
        asyncio.run(
            self._publish_to(bootstrap, f"{topic_prefix}petition-state", petition_id.encode(), states[-1].value)
        )

    async def _publish_to(self, bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
        producer = AIOKafkaProducer(**self.kafka(bootstrap, acks="all"))
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    def publish_raw(self, key: bytes, event: events_pb2.SignatureEvent) -> None:
        """Puts an event straight on the log, as a retrying or replaying
        producer would, bypassing signing's checks."""
        asyncio.run(self._publish_raw(key, event.SerializeToString()))

    async def _publish_raw(self, key: bytes, value: bytes) -> None:
        producer = AIOKafkaProducer(**self.kafka(acks="all"))
        await producer.start()
        try:
            await producer.send_and_wait(self.signatures_topic, value, key=key)
        finally:
            await producer.stop()
