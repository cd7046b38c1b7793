"""The local stack's own certificate authority, and the server certificates
it signs: what the brokers' TLS listeners present and what clients trust.

Production gets these from its operator (Strimzi's cluster CA); here the
project makes them once per run directory, as PEM files, which Kafka reads
directly (ssl.keystore.type=PEM) and Python's ssl module trusts as they are.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough that a developer's run directory never sees one expire, short
# enough that a forgotten key is not trusted forever.
VALIDITY = datetime.timedelta(days=825)
# Every local server listens on the loopback: these are the names a client
# may dial it by.
LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServerCertificate:
    """A server's PEM files: its key with its certificate chain in one file
    (Kafka's PEM keystore wants both together), and the CA to trust."""

    keystore_file: Path
    ca_file: Path


@dataclass(frozen=True)
class LocalCA:
    """A CA kept in `directory` (ca.pem, ca-key.pem), made on first use."""

    directory: Path
    name: str = "petition-intake local CA"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def _key_file(self) -> Path:
        return self.directory / "ca-key.pem"

    def ensure(self) -> None:
        """Makes the CA unless both its files exist (kept across restarts:
        clients given the CA file before keep trusting the servers)."""
        if self.ca_file.exists() and self._key_file.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_private(self._key_file, _pkcs8(key))
        _write_public(self.ca_file, certificate.public_bytes(serialization.Encoding.PEM))

    def server_certificate(self, name: str, hosts: tuple[str, ...] = LOOPBACK_NAMES) -> ServerCertificate:
        """`name`.pem beside the CA: a key and a certificate for `hosts`
        (IP addresses and DNS names), signed by this CA; made once."""
        self.ensure()
        keystore = self.directory / f"{name}.pem"
        if not keystore.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            ca_key = serialization.load_pem_private_key(self._key_file.read_bytes(), password=None)
            if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self._key_file} is not the EC key this module writes")
            ca_certificate = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            now = datetime.datetime.now(datetime.UTC)
            certificate = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_certificate.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + VALIDITY)
                .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                # A broker is also a client of the other brokers (replication).
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            chain = certificate.public_bytes(serialization.Encoding.PEM) + self.ca_file.read_bytes()
            _write_private(keystore, _pkcs8(key) + chain)
        return ServerCertificate(keystore, self.ca_file)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Kafka's PEM keystore reads PKCS#8 ("BEGIN PRIVATE KEY") only.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Written under another name and renamed, so a reader never sees half a
    key; created 0600, never readable by others even for a moment."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    partial.rename(path)


def _write_public(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.rename(path)
