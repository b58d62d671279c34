"""Keys for local development: made on first use under CHOREO_HOME, so the demo stays two commands.

A service that finds no key for its identity, where the policy is absent or is a local development
policy (`"local": true`, see _policy), makes one in `<home>/keys/` and trusts it in
`<home>/policy.json` (transport._keyring.service_key decides when). A policy made here is local; one
made with `choreo keys` or written by an operator is not, and nothing is made for it: there keys
and trust are an operator's decision.

Several services start at once under `choreo up`, and `choreo keys` may change the policy
meanwhile, so every read-change-write of a policy file holds an exclusive lock (fcntl.flock) on a
lock file beside it (`policy_lock`): no change is lost to another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigurationError
from ._identity import Identity, Role
from ._keys import KeyPair
from ._policy import Policy, PolicyFile, write_policy


def key_path(home: Path, identity: Identity) -> Path:
    """Where the local key of `identity` is kept."""
    return home / "keys" / f"{identity.file_stem}.json"


@contextlib.contextmanager
def policy_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the policy file at `path` (`policy.json` -> `policy.lock` beside it).

    Args:
        path: The policy file (it need not exist; its directory is created).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f"{path.stem}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def local_policy(home: Path) -> Path:
    """`<home>/policy.json`, created as an empty local development policy if there is none.

    For a service that verifies before any local key was made (`choreo history` on a fresh home):
    services that start later add their keys to it.
    """
    path = home / "policy.json"
    with policy_lock(path):
        if not path.exists():
            write_policy(path, Policy(local=True))
    return path


def local_key(home: Path, identity: Identity) -> KeyPair:
    """The local key of `identity`, made and trusted in `<home>/policy.json` if there is none yet.

    Args:
        home: CHOREO_HOME.
        identity: Whose key.

    Returns:
        The key.

    Raises:
        ConfigurationError: `<home>/policy.json` is not a local development policy.
    """
    path = key_path(home, identity)
    policy_path = home / "policy.json"
    with policy_lock(policy_path):
        # A policy made now is local: only this function makes one so.
        policy = PolicyFile(policy_path).current() if policy_path.exists() else Policy(local=True)
        if not policy.local:
            raise ConfigurationError(f"no key for {identity}: {policy_path} is not a local development policy, "
                                     f"so none is made (`choreo keys new {identity}` makes one)")
        if path.exists():
            pair = KeyPair.load(path)
        else:
            pair = KeyPair.generate(identity)
            pair.save(path)
        if policy.key(pair.key_id) is None:
            # Local publishers may start any workflow: the demo's `choreo publish` is one.
            goals = ("*",) if identity.role is Role.PUBLISHER else None
            write_policy(policy_path, policy.trust(identity, pair.public, goals=goals))
    return pair
