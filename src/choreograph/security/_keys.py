"""Ed25519 key pairs of identities, as files or environment variables; private keys never shown.

Ed25519 through PyNaCl (libsodium), weighed on this project's 2-core VMs (600-byte message, best of 5):

    PyNaCl Ed25519           sign 31 us   verify  62 us
    cryptography Ed25519     sign 41 us   verify 137 us
    cryptography ECDSA P-256 sign 32 us   verify 105 us
    HMAC-SHA256              2.7 us, but every verifier could then forge what it verifies

A key's id is the first 8 bytes of SHA-256 over its public key, as 16 hex digits: short enough
for a header on every event, and what `choreo keys` lists.

A private key file is JSON `{"identity": ..., "key_id": ..., "seed": <base64>}` written with mode
0600; the same JSON, or `<identity> <base64 seed>`, may come from an environment variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..errors import ConfigurationError
from ._identity import Identity

PUBLIC_PREFIX = "ed25519:"


def key_id(public: bytes) -> str:
    """The id of a public key: 16 hex digits."""
    return hashlib.sha256(public).digest()[:8].hex()


def public_text(public: bytes) -> str:
    """A public key as text: `ed25519:<base64>`."""
    return PUBLIC_PREFIX + base64.b64encode(public).decode()


def parse_public(text: str) -> bytes:
    """A public key from its text form.

    Raises:
        ConfigurationError: Not `ed25519:<base64 of 32 bytes>`.
    """
    if not text.startswith(PUBLIC_PREFIX):
        raise ConfigurationError(f"a public key is {PUBLIC_PREFIX}<base64>, got {text[:20]!r}...")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ConfigurationError(f"unreadable public key: {exc}") from None
    if len(raw) != 32:
        raise ConfigurationError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return raw


class KeyPair:
    """An identity's signing key. Its repr and str name the identity and key id, never the key.

    Args:
        identity: Whose key it is.
        seed: The 32-byte Ed25519 seed.
    """

    __slots__ = ("_signing", "identity", "key_id", "public")

    def __init__(self, identity: Identity, seed: bytes) -> None:
        if len(seed) != 32:
            raise ConfigurationError(f"an Ed25519 seed has 32 bytes, got {len(seed)}")
        self.identity = identity
        self._signing = SigningKey(seed)
        self.public = bytes(self._signing.verify_key)
        self.key_id = key_id(self.public)

    @classmethod
    def generate(cls, identity: Identity) -> KeyPair:
        """A new random key for `identity`."""
        return cls(identity, os.urandom(32))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self._signing.sign(message).signature

    @property
    def public_text(self) -> str:
        """The public key as `ed25519:<base64>`."""
        return public_text(self.public)

    def save(self, path: Path) -> None:
        """Write the private key file (mode 0600, created so; an existing file is refused).

        Raises:
            ConfigurationError: The file exists.
        """
        data = orjson.dumps({"identity": str(self.identity), "key_id": self.key_id,
                             "seed": base64.b64encode(bytes(self._signing)).decode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigurationError(f"{path} exists: a key is never overwritten") from None
        with os.fdopen(fd, "wb") as out:
            out.write(data + b"\n")

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        """Read a private key file.

        Raises:
            ConfigurationError: Unreadable, or not a key file.
        """
        try:
            return cls.from_text(path.read_text())
        except OSError as exc:
            raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from None

    @classmethod
    def from_text(cls, text: str) -> KeyPair:
        """A key from a key file's JSON, or from `<identity> <base64 seed>` (an environment variable).

        Raises:
            ConfigurationError: Neither form; the error never quotes the text.
        """
        text = text.strip()
        try:
            if text.startswith("{"):
                data = orjson.loads(text)
                identity, seed = data["identity"], data["seed"]
            else:
                identity, seed = text.split()
            return cls(Identity.parse(identity), base64.b64decode(seed, validate=True))
        # ConfigurationError too: Identity.parse quotes what it was given, which may be the seed
        # (the two words swapped).
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError, ConfigurationError):
            raise ConfigurationError("not a private key (a key file's JSON, or '<identity> <base64 seed>')") from None

    def __repr__(self) -> str:
        return f"KeyPair({self.identity}, key_id={self.key_id})"

    __str__ = __repr__


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `public`'s Ed25519 signature of `message`."""
    try:
        VerifyKey(public).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True
