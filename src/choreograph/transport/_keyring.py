"""Where a service finds its key and the policy: files and environment variables, resolved once at start.

    CHOREO_POLICY     the policy file (default `<CHOREO_HOME>/policy.json`)
    CHOREO_KEYS_DIR   private key files, `<identity stem>.json` (default `<CHOREO_HOME>/keys`)
    CHOREO_KEY        a private key as `<identity> <base64 seed>` (or a key file's JSON): wins over files
    CHOREO_KEY_FILE   a private key file: wins over CHOREO_KEYS_DIR
    CHOREO_VERIFY     `off` turns signature checks off (services say so loudly); unset or `on`: on
    CHOREO_PUBLISHER  the name a client publishes goals as (`publisher:<name>`, default `local`)
    CHOREO_OPERATOR   the name an operator's tools sign as (`operator:<name>`, default `local`):
                      restore markers (`choreo archive restore`), retirements (`choreo agents retire`)

With none of these set, local development needs nothing: a service with no key makes one under
CHOREO_HOME and trusts it, as long as the policy there is absent or a local development policy
(`"local": true`; see security._local, the one place dev keys are made). Any other policy is an
operator's: a missing key is an error naming the `choreo keys` command that makes one.

Errors never quote a private key: CHOREO_KEY is named, never shown.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigurationError
from ..security._identity import Identity, Role
from ..security._keys import KeyPair
from ..security._local import key_path, local_key, local_policy
from ..security._policy import PolicyFile
from ..security._verify import Verifier
from ._settings import run_dir, verify_off

log = logging.getLogger(__name__)


def policy_path() -> Path:
    """The policy file: CHOREO_POLICY if set, else `<CHOREO_HOME>/policy.json`."""
    value = os.environ.get("CHOREO_POLICY")
    return Path(value).resolve() if value else run_dir() / "policy.json"


def keys_dir() -> Path:
    """The directory of private key files: CHOREO_KEYS_DIR if set, else `<CHOREO_HOME>/keys`."""
    value = os.environ.get("CHOREO_KEYS_DIR")
    return Path(value).resolve() if value else run_dir() / "keys"


def verification_off() -> bool:
    """Whether CHOREO_VERIFY is `off` (services then act on unsigned records, and log so at start).

    Raises:
        ConfigurationError: CHOREO_VERIFY is neither `on` nor `off`.
    """
    return verify_off()


def publisher_identity() -> Identity:
    """Who a client publishes goals as: `publisher:<CHOREO_PUBLISHER>` (default `publisher:local`).

    Raises:
        ConfigurationError: CHOREO_PUBLISHER is not a name.
    """
    return _named(Role.PUBLISHER, "CHOREO_PUBLISHER")


def operator_identity() -> Identity:
    """Who an operator's tools (restore, retire) sign as: `operator:<CHOREO_OPERATOR>` (default `operator:local`).

    Raises:
        ConfigurationError: CHOREO_OPERATOR is not a name.
    """
    return _named(Role.OPERATOR, "CHOREO_OPERATOR")


def _named(role: Role, variable: str) -> Identity:
    name = os.environ.get(variable) or "local"
    try:
        return Identity.parse(f"{role.value}:{name}")
    except ConfigurationError:
        raise ConfigurationError(f"{variable}={name!r}: expected a name of letters, digits, _ - and .") from None


def _local_allowed() -> bool:
    """Whether a missing key may be made here: the policy is CHOREO_HOME's, and absent or local.

    A CHOREO_POLICY elsewhere is an operator's choice of file: nothing is made for it.
    """
    path = policy_path()
    if path != run_dir() / "policy.json":
        return False
    return not path.exists() or PolicyFile(path).current().local


def _owned(pair: KeyPair, identity: Identity, where: str) -> KeyPair:
    if pair.identity != identity:
        raise ConfigurationError(f"{where} holds a key of {pair.identity}, not of {identity}")
    return pair


def service_key(identity: Identity) -> KeyPair:
    """The private key a service of `identity` signs with.

    From CHOREO_KEY, else CHOREO_KEY_FILE, else `<keys_dir>/<identity stem>.json`; else, where the
    policy is absent or local (see the module docstring), a local development key made and trusted.

    Args:
        identity: Who the service is.

    Returns:
        The key.

    Raises:
        ConfigurationError: The key found is unreadable or another identity's, or there is none and
            none may be made (the line says which `choreo keys` command makes one).
    """
    if text := os.environ.get("CHOREO_KEY"):
        try:
            pair = KeyPair.from_text(text)
        except ConfigurationError as exc:  # its message never quotes the text
            raise ConfigurationError(f"CHOREO_KEY: {exc}") from None
        return _owned(pair, identity, "CHOREO_KEY")
    if file := os.environ.get("CHOREO_KEY_FILE"):
        return _owned(_load(Path(file), f"CHOREO_KEY_FILE={file}"), identity, f"CHOREO_KEY_FILE={file}")
    path = keys_dir() / f"{identity.file_stem}.json"
    local, home = _local_allowed(), run_dir()
    # A local key is read through local_key even when its file exists: that trusts it again in a
    # local policy made anew (the policy deleted, the keys kept).
    if path.exists() and not (local and path == key_path(home, identity)):
        return _owned(_load(path, str(path)), identity, str(path))
    if local:
        made = not key_path(home, identity).exists()
        pair = local_key(home, identity)
        if made:
            log.info("made a local development key %s for %s in %s, trusted in the local policy %s",
                        pair.key_id, identity, key_path(home, identity), home / "policy.json")
        return _owned(pair, identity, str(key_path(home, identity)))
    raise ConfigurationError(f"no key for {identity}: `choreo keys new {identity}` makes one "
                             "(or set CHOREO_KEY_FILE)")


def _load(path: Path, where: str) -> KeyPair:
    """A private key file; errors start with `where` and never quote the file's text."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read the key file: {exc.strerror or exc}") from None
    try:
        return KeyPair.from_text(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def service_policy() -> PolicyFile:
    """The policy every service verifies against, re-read when the file changes.

    A missing `<CHOREO_HOME>/policy.json` is created as an empty local development policy (the
    services that start add their keys to it); a missing CHOREO_POLICY file is an error.

    Raises:
        ConfigurationError: The file is missing (CHOREO_POLICY), unreadable, or not a policy.
    """
    path = policy_path()
    if not path.exists():
        if path != run_dir() / "policy.json":
            raise ConfigurationError(f"CHOREO_POLICY={path}: no such policy file (`choreo keys new IDENTITY` "
                                     "or `choreo keys trust` makes one)")
        local_policy(run_dir())
    return PolicyFile(path)


def service_verifier() -> Verifier | None:
    """A verifier over the policy (service_policy) for a reader that checks what it shows; None with CHOREO_VERIFY=off.

    Raises:
        ConfigurationError: As service_policy, or CHOREO_VERIFY is neither `on` nor `off`.
    """
    return None if verification_off() else Verifier(service_policy())
