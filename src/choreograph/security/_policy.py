"""The policy: which keys speak for which identity, and which workflows each publisher may start.

One JSON file loaded by every service (`CHOREO_POLICY`, default `<CHOREO_HOME>/policy.json`), and
written by `choreo keys`. A file rather than signed records on the registry topic: who may sign is
the root of trust, and a root read from the topics it protects would need a key of its own to be
believed; a file is distributed like any secret-free configuration (a ConfigMap, a volume) and
reviewed like code. Services re-read it when it changes (see PolicyFile), so keys can rotate
without restarts.

    {"identities": {
        "coordinator": {"keys": [{"key_id": "…", "public": "ed25519:…", "added_at": 1763…,
                                   "retired_at": null, "revoked": false}]},
        "agent:report/draft": {"keys": […]},
        "publisher:web": {"keys": […], "goals": ["report"]},
        "operator:alice": {"keys": […]}},
     "local": true}

`"local": true` marks a *local development* policy: the one `local_key` creates under CHOREO_HOME
when a service finds no key and no policy. There a service without a key makes its own and trusts
it; in any other policy (one `choreo keys` created, or an operator wrote) a missing key is an error.
`choreo keys new/trust/retire` keep the flag as they find it.

A key is *retired* at a time: records logged before then stay valid (what was signed during a
change-over is never rejected), later ones are not. A *revoked* key (stolen) is valid for nothing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigurationError
from ._identity import Identity, Role
from ._keys import key_id, parse_public, public_text

log = logging.getLogger("choreograph.security")


@dataclass(frozen=True)
class TrustedKey:
    """One public key of an identity.

    Attributes:
        key_id: Its id.
        public: The 32-byte Ed25519 public key.
        added_at: When it was trusted, Unix ms.
        retired_at: Records logged from then on are refused; None: in use.
        revoked: Refused for every record.
    """

    key_id: str
    public: bytes
    added_at: int = 0
    retired_at: int | None = None
    revoked: bool = False

    def refusal(self, timestamp_ms: int) -> str | None:
        """Why a record logged at `timestamp_ms` signed with this key is refused; None if it is not."""
        if self.revoked:
            return f"key {self.key_id} is revoked"
        if self.retired_at is not None and timestamp_ms >= self.retired_at:
            return f"key {self.key_id} was retired before the record was logged"
        return None


@dataclass(frozen=True)
class Entry:
    """An identity's keys and, for a publisher, the workflows it may start ("*": any)."""

    keys: tuple[TrustedKey, ...] = ()
    goals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    """Identities, their keys and permissions. Immutable: changes return a new policy.

    Attributes:
        identities: Identity -> its entry.
        local: A local development policy: services that find no key make one and trust it here.
    """

    identities: dict[Identity, Entry] = field(default_factory=dict)
    local: bool = False

    def key(self, key_id: str) -> tuple[Identity, TrustedKey] | None:
        """The identity and key with this id, if trusted (retired and revoked keys included)."""
        return self._by_key.get(key_id)

    @cached_property
    def _by_key(self) -> dict[str, tuple[Identity, TrustedKey]]:
        # Built once per policy (a policy never changes: trust and retire return new ones).
        return {k.key_id: (identity, k) for identity, entry in self.identities.items() for k in entry.keys}

    def goals(self, identity: Identity) -> tuple[str, ...]:
        """The workflows a publisher may start."""
        entry = self.identities.get(identity)
        return () if entry is None else entry.goals

    def trust(self, identity: Identity, public: bytes, *, now_ms: int | None = None,
              goals: tuple[str, ...] | None = None) -> Policy:
        """A policy where `public` speaks for `identity` too (other keys stay valid: rotation).

        Args:
            identity: Whose key it is.
            public: The public key.
            now_ms: When (default now).
            goals: For a publisher, the workflows it may start (default: keep, or "*" for a new one).

        Raises:
            ConfigurationError: The key is trusted for another identity already.
        """
        kid = key_id(public)
        if (known := self.key(kid)) is not None and known[0] != identity:
            raise ConfigurationError(f"key {kid} already speaks for {known[0]}")
        entry = self.identities.get(identity, Entry())
        keys = entry.keys if known is not None else (*entry.keys, TrustedKey(kid, public, now_ms or _now()))
        if goals is None:
            goals = entry.goals if identity in self.identities or identity.role is not Role.PUBLISHER else ("*",)
        return replace(self, identities={**self.identities, identity: Entry(keys, goals)})

    def retire(self, kid: str, *, now_ms: int | None = None, revoke: bool = False) -> Policy:
        """A policy where key `kid` is retired now (or revoked).

        Raises:
            ConfigurationError: No such key.
        """
        found = self.key(kid)
        if found is None:
            raise ConfigurationError(f"no trusted key {kid}")
        identity, old = found
        new = replace(old, retired_at=old.retired_at or now_ms or _now(), revoked=old.revoked or revoke)
        entry = self.identities[identity]
        keys = tuple(new if k.key_id == kid else k for k in entry.keys)
        return replace(self, identities={**self.identities, identity: replace(entry, keys=keys)})

    def to_json(self) -> bytes:
        """The policy file's text."""
        data: dict[str, Any] = {"identities": {str(i): _entry_json(e) for i, e in sorted(
            self.identities.items(), key=lambda item: str(item[0]))}}
        if self.local:
            data["local"] = True
        return orjson.dumps(data, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, text: bytes | str) -> Policy:
        """Read a policy file's text.

        Raises:
            ConfigurationError: Not a policy (the message says where).
        """
        try:
            data = orjson.loads(text)
            identities = {}
            for name, entry in data["identities"].items():
                keys = tuple(TrustedKey(k["key_id"], parse_public(k["public"]), int(k.get("added_at") or 0),
                                        k.get("retired_at"), bool(k.get("revoked", False)))
                             for k in entry.get("keys", []))
                for k in keys:
                    if k.key_id != key_id(k.public):
                        raise ConfigurationError(f"{name}: key_id {k.key_id} is not its public key's id")
                identities[Identity.parse(name)] = Entry(keys, tuple(entry.get("goals", ())))
            local = data.get("local", False)
            if not isinstance(local, bool):
                raise ConfigurationError(f"not a policy file: \"local\" is true or false, not {type(local).__name__}")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"not a policy file: {exc.__class__.__name__}: {exc}") from None
        return cls(identities, local)


def _entry_json(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {"keys": [{"key_id": k.key_id, "public": public_text(k.public), "added_at": k.added_at,
                                     "retired_at": k.retired_at, "revoked": k.revoked} for k in entry.keys]}
    if entry.goals:
        out["goals"] = list(entry.goals)
    return out


def _now() -> int:
    return time.time_ns() // 1_000_000


class PolicyFile:
    """A policy file, read again when it changes (checked at most once per `every_s`).

    Args:
        path: The file.
        every_s: The least time between two checks of its modification time.

    Raises:
        ConfigurationError: The file cannot be read or is not a policy.
    """

    def __init__(self, path: Path, every_s: float = 1.0) -> None:
        self.path = path
        self._every = every_s
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.policy = Policy()
        self._read()

    def current(self, *, force: bool = False) -> Policy:
        """The policy, read again if the file changed since (checked at most once per `every_s`).

        Args:
            force: Check the file now (an unknown key id: perhaps a service that has just made and
                trusted its key). A check is one stat (about 1 µs, against 62 µs for a signature),
                so a flood of records under unknown keys costs little.
        """
        now = time.monotonic()
        if force or now - self._checked >= self._every:
            self._checked = now
            try:
                stat = os.stat(self.path)
            except OSError:
                return self.policy  # gone for a moment (an editor's rename): keep the last one
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                try:
                    self._read()
                except ConfigurationError as exc:
                    # A half-edited or broken file must not stop a running service, nor trust
                    # anything new: the last good policy stays until the file is fixed.
                    self._stamp = (stat.st_mtime_ns, stat.st_size)
                    log.error("%s; keeping the policy read before", exc)
        return self.policy

    def _read(self) -> None:
        try:
            stat = os.stat(self.path)
            text = self.path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read policy {self.path}: {exc.strerror}") from None
        try:
            self.policy = Policy.from_json(text)
        except ConfigurationError as exc:  # which file: CHOREO_POLICY may name any
            raise ConfigurationError(f"{self.path}: {exc}") from None
        self._stamp = (stat.st_mtime_ns, stat.st_size)

    def update(self, policy: Policy) -> None:
        """Write `policy` to the file (atomically: a reader sees the old file or the new one)."""
        write_policy(self.path, policy)
        self.policy = policy
        stat = os.stat(self.path)
        self._stamp = (stat.st_mtime_ns, stat.st_size)


def write_policy(path: Path, policy: Policy) -> None:
    """Write a policy file atomically (a reader sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(policy.to_json() + b"\n")
    os.replace(temp, path)
