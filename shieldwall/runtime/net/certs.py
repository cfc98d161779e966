"""Test certificates and tokens for the networked mode (``shieldwall certs OUT_DIR``).

Writes a private CA (``ca.crt``/``ca.key``), a server certificate (``server.crt``/``server.key``,
with the given host names and IP addresses as subject alternative names) and one client
certificate per client id (``client-K.crt``/``client-K.key``, common name ``client-K``, which the
server matches against the claimed id), all signed by the CA; and with ``tokens=True`` a
``tokens.yaml`` of random per-client tokens for ``comm_args.token_file``. Keys are ECDSA P-256,
written unencrypted with mode 0600: for tests and trials; production deployments use their
organisation's PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["make_certificates", "make_tokens", "certificate_files", "check_new"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shieldwall test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def certificate_files(client_ids: Iterable[int]) -> list[str]:
    """The names :func:`make_certificates` writes for ``client_ids``."""
    names = ["ca.crt", "ca.key", "server.crt", "server.key"]
    for k in client_ids:
        names += [f"client-{int(k)}.crt", f"client-{int(k)}.key"]
    return names


def check_new(paths: Iterable[Path]) -> None:
    """ValueError naming the first of ``paths`` that exists: keys and tokens already handed out
    are never overwritten (a new CA would lock every deployed client out)."""
    for path in paths:
        if path.exists() or path.is_symlink():
            raise ValueError(f"{str(path)!r} already exists: certificates, keys and tokens are "
                             "never overwritten; write into a new folder (or remove the old "
                             "files yourself)")


def _check_ids(client_ids: Iterable[int]) -> list[int]:
    ids = [int(k) for k in client_ids]
    if not ids:
        raise ValueError("--clients: no client ids given (a count N >= 1, or ids like 1,2,3)")
    bad = [k for k in ids if k < 1]
    if bad:
        raise ValueError(f"--clients: client ids start at 1, got {bad[0]}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--clients: duplicate client ids in {ids}")
    return ids


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    """Create ``path`` (never replacing a file); a private one is mode 0600 from its creation,
    so the key is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sign(
    subject: str, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name, days: int, *, ca: bool = False, sans: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_certificates(
    out_dir: str | Path, client_ids: Iterable[int], *,
    hosts: Iterable[str] = ("localhost", "127.0.0.1"), days: int = 30,
) -> dict[str, Path]:
    """Write the CA, server and client certificates into ``out_dir``; name → path. ValueError
    for no, duplicate or non-positive client ids, ``days < 1``, or a file already there."""
    client_ids = _check_ids(client_ids)
    if days < 1:
        raise ValueError(f"--days: certificates must be valid for >= 1 day, got {days}")
    out = Path(out_dir)
    check_new(out / name for name in certificate_files(client_ids))
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _sign("shieldwall test CA", ca_key, ca_key, _name("shieldwall test CA"), days,
                    ca=True)
    written["ca.crt"] = _write(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    written["ca.key"] = _write(out / "ca.key", _key_pem(ca_key), private=True)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    entities = [("server", sans, ExtendedKeyUsageOID.SERVER_AUTH)]
    entities += [(f"client-{int(k)}", [x509.DNSName(f"client-{int(k)}")],
                  ExtendedKeyUsageOID.CLIENT_AUTH) for k in client_ids]
    for name, alt, usage in entities:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(name, key, ca_key, ca_cert.subject, days, sans=alt, usage=[usage])
        written[f"{name}.crt"] = _write(out / f"{name}.crt",
                                        cert.public_bytes(serialization.Encoding.PEM))
        written[f"{name}.key"] = _write(out / f"{name}.key", _key_pem(key), private=True)
    return written


def make_tokens(path: str | Path, client_ids: Iterable[int]) -> Path:
    """Write ``client_id: token`` (32 random bytes, hex) for each client, mode 0600; ValueError
    when ``path`` exists."""
    tokens = {k: secrets.token_hex(32) for k in _check_ids(client_ids)}
    check_new([Path(path)])
    return _write(Path(path), yaml.safe_dump(tokens).encode(), private=True)
