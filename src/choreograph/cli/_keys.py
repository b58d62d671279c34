"""`choreo keys new|trust|retire|ls|show-public`: identities' keys and the policy that trusts them.

The policy file is CHOREO_POLICY (default `<CHOREO_HOME>/policy.json`), private key files live in
CHOREO_KEYS_DIR (default `<CHOREO_HOME>/keys`); see transport._keyring. Every change is a
read-change-write under the policy's lock (security._local.policy_lock), so services making local
keys at the same moment lose nothing. Private keys are written (mode 0600), never printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ..errors import ConfigurationError
from ..security._identity import Identity, Role
from ..security._keys import KeyPair, key_id, parse_public, public_text
from ..security._local import policy_lock
from ..security._policy import Policy, PolicyFile, TrustedKey, write_policy
from ..transport._keyring import keys_dir, policy_path
from ._input import USAGE, err, fail

keys_app = typer.Typer(no_args_is_help=True, help="Keys of identities and the policy that trusts them: new, trust, "
                                                  "retire, ls, show-public.")

_WORKFLOW = re.compile(r"[A-Za-z0-9._-]+")
_KEY_ID = re.compile(r"[0-9a-f]{16}")

GoalsOption = Annotated[str | None, typer.Option(
    "--goals", metavar="W,W", help="a publisher's workflows it may start (`*`: any; default for a new publisher)")]


def _goals(identity: Identity, text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    if identity.role is not Role.PUBLISHER:
        raise fail(f"--goals is for publisher identities, not {identity}", USAGE)
    goals = tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))
    bad = [g for g in goals if g != "*" and not _WORKFLOW.fullmatch(g)]
    if not goals or bad:
        raise fail(f"--goals {text!r}: expected workflow names separated by commas, or *", USAGE)
    return goals


def _read(path: Path) -> Policy | None:
    return PolicyFile(path).current() if path.exists() else None


def _time(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(key: TrustedKey) -> str:
    return "revoked" if key.revoked else "retired" if key.retired_at is not None else "in use"


def _goal_text(goals: tuple[str, ...]) -> str:
    return "any workflow" if "*" in goals else ", ".join(goals) or "none"


@keys_app.command("new")
def new(
    identity_text: Annotated[str, typer.Argument(metavar="IDENTITY", help="coordinator, agent:W/S, publisher:N or "
                                                 "operator:N")],
    out: Annotated[Path | None, typer.Option("--out", metavar="FILE", help="where to write the private key "
                                             "(default: CHOREO_KEYS_DIR/<identity>.json); never overwritten")] = None,
    goals_text: GoalsOption = None,
) -> None:
    """A new key pair for IDENTITY: the private key written (mode 0600), its public key trusted.

    The identity's other keys stay valid (rotation): restart its services with the new key, then
    `choreo keys retire OLD`. Without --out the key becomes `<identity>.json` in the keys directory,
    where services look for it; a key already there is kept beside it as `<identity>.<key id>.json`.
    """
    identity = Identity.parse(identity_text)
    goals = _goals(identity, goals_text)
    pair = KeyPair.generate(identity)
    path = policy_path()
    written = out or keys_dir() / f"{identity.file_stem}.json"
    previous: tuple[str, Path] | None = None
    # Written where no service looks, trusted, then moved in place (under the lock local keys are
    # made under): a service starting at any moment finds a whole key, and a trusted one.
    staged = out or written.with_name(f".{written.stem}.{pair.key_id}.tmp")
    staged.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a keys directory others cannot list
    pair.save(staged)  # refuses an existing --out: nothing is changed then
    done = False
    try:
        with policy_lock(path):
            if out is None:
                previous = _keep_previous(written)
            trusted = _change_locked(path, lambda policy: policy.trust(identity, pair.public, goals=goals))
            if out is None:
                os.replace(staged, written)
            done = True
    finally:
        if not done:  # no key file is left behind that the policy does not trust
            staged.unlink(missing_ok=True)
    print(f"{identity}: new key {pair.key_id}")
    print(f"  public key   {pair.public_text}")
    print(f"  private key  {written} (mode 0600; never printed)")
    print(f"  trusted in   {path}" + (" (a local development policy)" if trusted.local else ""))
    if identity.role is Role.PUBLISHER:
        print(f"  may publish  goals of {_goal_text(trusted.goals(identity))}")
    if previous is not None:
        old_id, kept = previous
        found = trusted.key(old_id)
        if found is not None and _state(found[1]) == "in use":
            print(f"  previous     key {old_id}, kept in {kept}, still trusted: once the services run with the new "
                  f"key, `choreo keys retire {old_id}`")
        else:
            state = "not trusted" if found is None else _state(found[1])
            print(f"  previous     key {old_id}, kept in {kept} ({state})")


def _keep_previous(path: Path) -> tuple[str, Path] | None:
    """Keep the key file at `path`, if any, as `<stem>.<key id>.json` beside it (a copy, mode 0600)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the key file there: {exc.strerror}") from None
    try:
        old = KeyPair.from_text(data.decode("utf-8", "replace"))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}; move it away, or give --out") from None
    kept = path.with_name(f"{path.stem}.{old.key_id}.json")
    try:
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return old.key_id, kept  # kept before: the same key (an id is its public key's)
    with os.fdopen(fd, "wb") as copy:
        copy.write(data)
    return old.key_id, kept


@keys_app.command("trust")
def trust(
    identity_text: Annotated[str, typer.Argument(metavar="IDENTITY", help="whose key it is")],
    public: Annotated[str, typer.Argument(metavar="PUBLIC_KEY", help="ed25519:<base64>, from `choreo keys "
                                          "show-public` where the private key is")],
    goals_text: GoalsOption = None,
) -> None:
    """Trust a public key made elsewhere as IDENTITY's (its other keys stay valid)."""
    identity = Identity.parse(identity_text)
    goals = _goals(identity, goals_text)
    raw = parse_public(public)
    kid, path = key_id(raw), policy_path()
    known: list[bool] = []

    def change(policy: Policy) -> Policy:
        found = policy.key(kid)
        known.append(found is not None)
        if found is not None and found[0] == identity and found[1].retired_at is not None:
            raise ConfigurationError(f"key {kid} of {identity} is {_state(found[1])}: a retired key is not "
                                     "trusted again (make a new one)")
        return policy.trust(identity, raw, goals=goals)

    with policy_lock(path):
        policy = _change_locked(path, change)
    print(f"{identity}: key {kid} {'was trusted already' if known[0] else 'trusted'} in {path}")
    if identity.role is Role.PUBLISHER:
        print(f"  may publish  goals of {_goal_text(policy.goals(identity))}")


@keys_app.command("retire")
def retire(
    kid: Annotated[str, typer.Argument(metavar="KEY_ID", help="a key id, from `choreo keys ls`")],
    revoke: Annotated[bool, typer.Option("--revoke", help="refuse every record signed with it, those logged "
                                         "before too (a stolen key)")] = False,
) -> None:
    """Retire a key now: records logged from now on signed with it are refused, earlier ones stay valid.

    --revoke refuses them all. Exit 1 if no trusted key has that id.
    """
    if not _KEY_ID.fullmatch(kid):
        raise fail(f"{kid!r} is not a key id (16 hex digits; see `choreo keys ls`)", USAGE)
    path = policy_path()
    with policy_lock(path):
        policy = _read(path)
        found = None if policy is None else policy.key(kid)
        if policy is None or found is None:
            raise fail(f"no trusted key {kid} in {path} (see `choreo keys ls`)")
        after = _change_locked(path, lambda p: p.retire(kid, revoke=revoke))
    identity, key = found
    keys = after.identities[identity].keys
    if revoke:
        print(f"revoked key {kid} of {identity}: every record signed with it is refused" +
              (" (it was revoked already)" if key.revoked else ""))
    else:
        when = _time(next(k for k in keys if k.key_id == kid).retired_at)
        print(f"retired key {kid} of {identity} at {when}: records logged from then on signed with it are refused, "
              "earlier ones stay valid" + (" (it was retired already)" if key.retired_at is not None else ""))
    if not any(k.retired_at is None and not k.revoked for k in keys):
        err(f"{identity} has no key in use left: its services cannot publish until `choreo keys new {identity}`",
            "warning", "yellow")


def _change_locked(path: Path, change: Callable[[Policy], Policy]) -> Policy:
    """Apply `change` to the policy at `path` (a new one, not local, if there is none): hold its lock."""
    before = _read(path) or Policy()
    after = change(before)
    if after != before or not path.exists():
        write_policy(path, after)
    return after


@keys_app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """Identities, their key ids, when each was added, retired or revoked, and publishers' goals.

    Public keys only (with --json); private keys are never read. Exit 1 if there is no policy file.
    """
    path = policy_path()
    policy = _read(path)
    if policy is None:
        raise fail(f"no policy at {path} (`choreo keys new IDENTITY` makes one; CHOREO_POLICY names another)")
    identities = sorted(policy.identities.items(), key=lambda item: str(item[0]))
    if as_json:
        print(orjson.dumps({"policy": str(path), "local": policy.local, "identities": [
            {"identity": str(i), "role": i.role.value, "goals": list(e.goals), "keys": [_key_json(k) for k in e.keys]}
            for i, e in identities]}, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"policy {path}" + (" (local development: services make their own keys)" if policy.local else ""))
    rows = [["identity", "key id", "state", "added", "retired", "goals"]]
    for identity, entry in identities:
        goals = _goal_text(entry.goals) if identity.role is Role.PUBLISHER else "-"
        for key in entry.keys:
            rows.append([str(identity), key.key_id, _state(key), _shown_time(key.added_at),
                         _shown_time(key.retired_at), goals])
    if len(rows) == 1:
        print("no identity is trusted")
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _key_json(key: TrustedKey) -> dict[str, Any]:
    return {"key_id": key.key_id, "public": public_text(key.public), "state": _state(key),
            "added_at": key.added_at, "added": _time(key.added_at), "retired_at": key.retired_at,
            "retired": _time(key.retired_at), "revoked": key.revoked}


def _shown_time(ms: int | None) -> str:
    return "-" if ms is None else (_time(ms) or "-").replace("T", " ")


@keys_app.command("show-public")
def show_public(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="a private key file")],
    as_json: Annotated[bool, typer.Option("--json", help='{"identity", "key_id", "public"}')] = False,
) -> None:
    """The identity and public key of a private key file: `choreo keys trust $(choreo keys show-public FILE)`."""
    try:
        text = file.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror or exc}", USAGE) from None
    try:
        pair = KeyPair.from_text(text)
    except ConfigurationError as exc:  # never quotes the file
        raise fail(f"{file}: {exc}", USAGE) from None
    if as_json:
        data = {"identity": str(pair.identity), "key_id": pair.key_id, "public": pair.public_text}
        print(orjson.dumps(data).decode())
    else:
        print(f"{pair.identity} {pair.public_text}")
