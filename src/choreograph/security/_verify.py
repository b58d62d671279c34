"""Checking a record: signed by a trusted key, and its signer allowed to say what it says.

A service calls `Verifier.admit` only for records it acts on (a skipped record costs nothing), and
remembers what it verified: a signature seen before (a duplicate, a record read again after a
restart) is not verified twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ..errors import DecodeError
from ..events._envelope import Envelope
from ._identity import Identity, may_publish
from ._policy import Policy, PolicyFile
from ._signing import Signature, signature_of, signed_message

log = logging.getLogger(__name__)

# Signatures remembered per service (made by this process, or verified): a record read again (its
# own result read back, a duplicate delivery, the look-back after a restart) costs a 16-byte BLAKE2b
# digest (2 us for a 600-byte record, measured on a busy 2-core machine) instead of a verify (62 us).
# An entry is about 250 bytes whatever the record's size (a digest, not the message: 1 MiB records
# must not pile up), so 65,536 cost about 16 MB: a coordinator with thousands of sagas in flight.
_REMEMBERED = 65_536


class Rejected(str):
    """Why a record is not acted on: the text of a dead letter's reason."""

    __slots__ = ()


class Verifier:
    """Verifies records against a policy (a PolicyFile, re-read when it changes, or a fixed Policy).

    Args:
        policy: The policy, or the file holding it.
    """

    def __init__(self, policy: Policy | PolicyFile) -> None:
        self._source = policy
        self._verify_keys: dict[bytes, VerifyKey] = {}
        self._seen: OrderedDict[bytes, tuple[bytes, Identity, str]] = OrderedDict()  # signature -> (digest, ...)
        self.verified = 0  # signatures checked (not remembered): the cost a benchmark reports

    @property
    def policy(self) -> Policy:
        """The policy now."""
        source = self._source
        return source.current() if isinstance(source, PolicyFile) else source

    def signer(self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]],
               timestamp_ms: int) -> Identity | Rejected:
        """Who signed the record, or why that cannot be believed.

        Args:
            key: The record key.
            value: The record value.
            headers: Its headers.
            timestamp_ms: When it was logged (a retired key is valid before its retirement).
        """
        found = signature_of(headers)
        if not isinstance(found, Signature):
            return Rejected(found)
        message = signed_message(key, value, headers)
        # Remembered by signature *and* message digest: a genuine signature copied onto a changed
        # record must be verified (and fail), not recognised.
        digest = _digest(message)
        remembered = self._seen.get(found.signature)
        if remembered is not None and remembered[0] == digest:
            _, identity, kid = remembered
            refusal = self._key_refusal(kid, timestamp_ms)
            return Rejected(refusal) if refusal else identity
        policy = self.policy
        trusted = policy.key(found.key_id)
        if trusted is None and isinstance(source := self._source, PolicyFile):
            trusted = source.current(force=True).key(found.key_id)  # trusted since the last read?
        if trusted is None:
            return Rejected(f"signed with unknown key {found.key_id}")
        identity, key_entry = trusted
        if (refusal := key_entry.refusal(timestamp_ms)) is not None:
            return Rejected(f"{refusal} ({identity})")
        verify_key = self._verify_keys.get(key_entry.public)
        if verify_key is None:
            verify_key = self._verify_keys[key_entry.public] = VerifyKey(key_entry.public)
        self.verified += 1
        try:
            verify_key.verify(message, found.signature)
        except BadSignatureError:
            return Rejected(f"bad signature for key {found.key_id} ({identity}): the record was changed "
                            "or signed by another key")
        self._seen[found.signature] = (digest, identity, found.key_id)
        if len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return identity

    def remember(self, signature: bytes, message: bytes, kid: str) -> None:
        """Know a record this process signed (Signer's `remember`): read back, it costs no verification."""
        trusted = self.policy.key(kid)
        if trusted is not None:
            self._seen[signature] = (_digest(message), trusted[0], kid)
            if len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)

    def _key_refusal(self, kid: str, timestamp_ms: int) -> str | None:
        trusted = self.policy.key(kid)
        if trusted is None:
            return f"key {kid} is no longer trusted"
        return trusted[1].refusal(timestamp_ms)

    def admit_record(self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]],
                     timestamp_ms: int, envelope: Envelope | None = None) -> Identity | Rejected:
        """As `admit`, the envelope read from the record's headers unless given.

        Returns:
            The identity, or why the record must not be acted on: a record that is no event (its
            envelope headers missing or malformed) is refused with what is wrong with them.
        """
        if envelope is None:
            try:
                envelope = Envelope.from_record(key, headers)
            except DecodeError as exc:
                return Rejected(str(exc))
        return self.admit(envelope, key, value, headers, timestamp_ms)

    def admit(self, envelope: Envelope, key: bytes | None, value: bytes | None,
              headers: Sequence[tuple[str, bytes]], timestamp_ms: int) -> Identity | Rejected:
        """The signer of a record whose envelope was read, if it may publish what the envelope says.

        Returns:
            The identity, or why the record must not be acted on (for its dead letter).
        """
        signer = self.signer(key, value, headers, timestamp_ms)
        if isinstance(signer, Rejected):
            return signer
        refusal = may_publish(signer, type=envelope.type, kind=envelope.kind, source=envelope.source,
                              workflow=envelope.workflow, step=envelope.step, goals=self.policy.goals(signer))
        return Rejected(refusal) if refusal is not None else signer


def _digest(message: bytes) -> bytes:
    """A 128-bit BLAKE2b digest of a signed message: a changed record cannot match a remembered one."""
    return hashlib.blake2b(message, digest_size=16).digest()
