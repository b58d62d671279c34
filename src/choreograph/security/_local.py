"""Keys for local development: created on first use in CHOREO_HOME, so the demo stays two commands.

On the embedded broker (no KAFKA_BOOTSTRAP_SERVERS), a service that finds no key for its identity
makes one in `<home>/keys/` and trusts it in `<home>/policy.json`. Several services start at once
under `choreo up`, so the policy is updated under an exclusive lock (fcntl.flock) on a lock file.
Against a configured cluster nothing is created: keys and the policy are an operator's decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ._identity import Identity, Role
from ._keys import KeyPair
from ._policy import Policy, PolicyFile, write_policy


def key_path(home: Path, identity: Identity) -> Path:
    """Where the local key of `identity` is kept."""
    return home / "keys" / f"{identity.file_stem}.json"


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "policy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def local_key(home: Path, identity: Identity) -> KeyPair:
    """The local key of `identity`, made and trusted in `<home>/policy.json` if there is none yet.

    Args:
        home: CHOREO_HOME.
        identity: Whose key.

    Returns:
        The key.
    """
    path = key_path(home, identity)
    with _locked(home):
        if path.exists():
            pair = KeyPair.load(path)
        else:
            pair = KeyPair.generate(identity)
            pair.save(path)
        policy_path = home / "policy.json"
        policy = PolicyFile(policy_path).current() if policy_path.exists() else Policy()
        if policy.key(pair.key_id) is None:
            # Local publishers may start any workflow: the demo's `choreo publish` is one.
            goals = ("*",) if identity.role is Role.PUBLISHER else None
            write_policy(policy_path, policy.trust(identity, pair.public, goals=goals))
    return pair
