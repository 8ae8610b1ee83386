"""Signing keys and signatures: ECDSA P-256 over SHA-256, DER-encoded, verifiable with
``openssl`` alone.

One format everywhere forge signs (image manifests, SBOMs, provenance, remote cache
records): the signature is the DER ``ECDSA-Sig-Value`` (RFC 3279) of SHA-256 over the
exact bytes of the signed blob, so any holder of the public key checks it with

    openssl dgst -sha256 -verify pub.pem -signature file.sig file

Signatures are deterministic (RFC 6979, ``cryptography``'s ``deterministic_signing``):
the same key and bytes give the same signature, so a signed artifact has one digest and
re-publishing it changes nothing.

A key is named by its *key id*, ``sha256:<hex>`` of its DER SubjectPublicKeyInfo (what
``openssl pkey -pubin -in pub.pem -outform DER | sha256sum`` prints): never secret, it
is what messages, annotations and ``trusted_keys`` comparisons use.

Where keys come from (``load_signing_key`` / ``load_public_key``): a PEM file path
(relative paths from the workspace root, ``~`` expanded), ``env:NAME`` for a PEM held in
an environment variable (CI secrets), or, for public keys, the PEM text itself. Key
files are made with openssl::

    openssl ecparam -name prime256v1 -genkey -noout -out key.pem
    openssl ec -in key.pem -pubout -out pub.pem

A private key is never printed, logged or written anywhere by forge.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from forge.core.errors import ConfigError

ALGORITHM = "ecdsa-p256-sha256"
_PEM_PUBLIC = "-----BEGIN PUBLIC KEY-----"


class KeyError_(ConfigError):
    """A key that cannot be read, or is not an ECDSA P-256 key."""


def _spki_der(public) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_p256(key, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) \
            or not isinstance(key.curve, ec.SECP256R1):
        kind = getattr(getattr(key, "curve", None), "name", None) or type(key).__name__
        raise KeyError_(f"{what} is a {kind} key; forge signs with ECDSA P-256 (prime256v1): "
                        "make one with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`")


@dataclass(frozen=True)
class PublicKey:
    """A verifying key: ``key_id`` names it, ``source`` says where it came from."""

    key_id: str
    pem: bytes = field(repr=False)
    source: str = ""

    @staticmethod
    def from_pem(pem: bytes, source: str = "") -> PublicKey:
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise KeyError_(f"{source or 'the public key'} is not a PEM public key "
                            "(-----BEGIN PUBLIC KEY-----)") from None
        _check_p256(key, source or "the public key")
        return PublicKey(key_id(key), key.public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo),
                         source)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (DER) is this key's over ``data``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_public_key(self.pem)
        try:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
        except (InvalidSignature, ValueError):
            return False
        return True

    def describe(self) -> str:
        return f"{self.key_id}" + (f" ({self.source})" if self.source else "")


class SigningKey:
    """A private key that signs. Its repr and messages show the key id and source only."""

    def __init__(self, private, source: str = ""):
        _check_p256(private, source or "the signing key")
        self._private = private
        self.source = source
        self.key_id = key_id(private.public_key())

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id}, {self.source!r})"

    @property
    def public(self) -> PublicKey:
        from cryptography.hazmat.primitives import serialization

        pem = self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return PublicKey(self.key_id, pem, self.source)

    def sign(self, data: bytes) -> bytes:
        """The DER signature of SHA-256(``data``); the same for the same key and bytes."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self._private.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))

    def describe(self) -> str:
        return f"{self.key_id}" + (f" ({self.source})" if self.source else "")


def key_id(public) -> str:
    """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo."""
    return "sha256:" + hashlib.sha256(_spki_der(public)).hexdigest()


def _read_spec(spec: str, root: Path | None, what: str) -> tuple[bytes, str]:
    """(PEM bytes, where they came from) of a key spec: ``env:NAME`` or a file path."""
    if spec.startswith("env:"):
        name = spec[4:]
        value = os.environ.get(name)
        if not value:
            raise KeyError_(f"{what} {spec!r}: environment variable {name} is not set")
        return value.encode(), f"${name}"
    path = Path(os.path.expanduser(spec))
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    try:
        return path.read_bytes(), str(spec)
    except OSError as exc:
        raise KeyError_(f"{what} {spec!r}: cannot read {path}: {exc.strerror or exc}") from None


def load_signing_key(spec: str, root: Path | None = None, *, what: str = "signing key") -> SigningKey:
    """The private key ``spec`` names (a PEM file, or ``env:NAME``); PKCS#8 or SEC1 PEM,
    unencrypted (CI hands keys over as secrets, not passphrases)."""
    from cryptography.hazmat.primitives import serialization

    data, source = _read_spec(spec, root, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if "encrypted" in str(exc).lower() or isinstance(exc, TypeError) \
            else "it is not a PEM private key"
        raise KeyError_(f"{what} {source}: cannot load it ({reason}); forge needs an unencrypted "
                        "ECDSA P-256 key in PEM") from None
    return SigningKey(key, source)


def load_public_key(spec: str, root: Path | None = None, *, what: str = "public key") -> PublicKey:
    """The public key ``spec`` names: PEM text, a PEM file or ``env:NAME``. A private key
    is accepted too (its public half is used)."""
    if _PEM_PUBLIC in spec:
        return PublicKey.from_pem(spec.encode(), "inline PEM")
    data, source = _read_spec(spec, root, what)
    if b"PRIVATE KEY" in data:
        return load_signing_key(spec, root, what=what).public
    return PublicKey.from_pem(data, source)
