"""`choreo keys` as a user runs it: new keys trusted, rotation (two valid keys, the previous one kept),
retire and revoke, a public key carried to another host with show-public and trust, errors on one
line; no private key in any output, key files mode 0600. No broker: keys are files. Each test its own
CHOREO_HOME."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import choreo, clean_env

from choreograph.security import COORDINATOR, local_key


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path / "home")


class Keys:
    """`choreo keys ...` in one environment, remembering every output to search for private keys."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.outputs: list[str] = []

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = choreo("keys", *args, env=self.env)
        self.outputs += [done.stdout, done.stderr]
        assert done.returncode == code, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def ls(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self("ls", "--json").stdout)
        return data

    def keys_of(self, identity: str) -> list[dict[str, Any]]:
        found = [i for i in self.ls()["identities"] if i["identity"] == identity]
        return list(found[0]["keys"]) if found else []

    def error(self, *args: str, code: int = 2) -> str:
        done = self(*args, code=code)
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        return done.stderr.strip()


def seed(path: Path) -> str:
    return str(orjson.loads(path.read_bytes())["seed"])


def assert_no_private_key(keys: Keys, *files: Path) -> None:
    for file in files:
        secret = seed(file)
        for output in keys.outputs:
            assert secret not in output
            assert secret[:12] not in output


def new_key_id(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.splitlines()[0].rsplit(" ", 1)[1]


def test_a_new_key_is_written_0600_trusted_and_listed_without_its_private_key(env: dict[str, str]) -> None:
    keys = Keys(env)
    keys.error("ls", code=1)  # no policy yet
    done = keys("new", "agent:report/draft")
    home = Path(env["CHOREO_HOME"])
    file = home / "keys" / "agent-report-draft.json"
    kid = new_key_id(done)
    assert done.stdout.startswith(f"agent:report/draft: new key {kid}\n")
    assert f"private key  {file} (mode 0600" in done.stdout
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    listed = keys("ls").stdout
    assert f"agent:report/draft  {kid}  in use" in listed
    data = keys.ls()
    assert data["local"] is False  # made by `choreo keys`: an operator's policy
    [entry] = data["identities"]
    assert entry["identity"] == "agent:report/draft"
    assert [(k["key_id"], k["state"], k["retired_at"], k["revoked"]) for k in entry["keys"]] == \
        [(kid, "in use", None, False)]
    assert entry["keys"][0]["public"] in done.stdout
    assert "seed" not in keys("ls", "--json").stdout
    assert_no_private_key(keys, file)


def test_rotation_keeps_both_keys_valid_until_the_old_one_is_retired(env: dict[str, str]) -> None:
    keys = Keys(env)
    home = Path(env["CHOREO_HOME"])
    file = home / "keys" / "coordinator.json"
    old = new_key_id(keys("new", "coordinator"))
    done = keys("new", "coordinator")
    new = new_key_id(done)
    kept = home / "keys" / f"coordinator.{old}.json"
    assert f"previous     key {old}, kept in {kept}, still trusted" in done.stdout
    assert f"`choreo keys retire {old}`" in done.stdout
    # The identity's file is the new key, where services look; the previous one is kept beside it.
    assert keys("show-public", str(file)).stdout.split()[0] == "coordinator"
    assert orjson.loads(keys("show-public", str(file), "--json").stdout)["key_id"] == new
    assert orjson.loads(keys("show-public", str(kept), "--json").stdout)["key_id"] == old
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [(k["key_id"], k["state"]) for k in keys.keys_of("coordinator")] == [(old, "in use"), (new, "in use")]

    retired = keys("retire", old)
    assert retired.stdout.startswith(f"retired key {old} of coordinator at ")
    assert "earlier ones stay valid" in retired.stdout
    assert retired.stderr == ""  # the new key is in use: no warning
    after = {k["key_id"]: k for k in keys.keys_of("coordinator")}
    assert after[old]["state"] == "retired"
    assert after[old]["retired_at"] is not None
    assert after[old]["revoked"] is False
    assert after[new]["state"] == "in use"
    listed = keys("ls").stdout
    assert f"coordinator  {old}  retired" in listed
    assert f"coordinator  {new}  in use" in listed
    assert_no_private_key(keys, file, kept)


def test_a_revoked_key_is_listed_revoked_and_the_last_key_gone_is_warned(env: dict[str, str]) -> None:
    keys = Keys(env)
    kid = new_key_id(keys("new", "operator:alice"))
    done = keys("retire", kid, "--revoke")
    assert done.stdout == f"revoked key {kid} of operator:alice: every record signed with it is refused\n"
    assert done.stderr.startswith("warning: operator:alice has no key in use left")
    [key] = keys.keys_of("operator:alice")
    assert (key["state"], key["revoked"]) == ("revoked", True)
    assert keys.error("retire", "0123456789abcdef", code=1).startswith("error: no trusted key 0123456789abcdef")
    assert keys.error("retire", "not-a-key") == \
        "error: 'not-a-key' is not a key id (16 hex digits; see `choreo keys ls`)"


def test_a_public_key_from_show_public_is_trusted_on_another_host(env: dict[str, str], tmp_path: Path) -> None:
    here = Keys(env)
    made = here("new", "publisher:web", "--out", str(tmp_path / "web.json"), "--goals", "report")
    kid = new_key_id(made)
    assert "may publish  goals of report" in made.stdout
    shown = here("show-public", str(tmp_path / "web.json")).stdout.split()
    assert shown[0] == "publisher:web"
    assert shown[1].startswith("ed25519:")

    there = Keys(clean_env(tmp_path / "other-host"))
    done = there("trust", *shown, "--goals", "report,trip")
    assert done.stdout.startswith(f"publisher:web: key {kid} trusted in ")
    [entry] = there.ls()["identities"]
    assert entry["goals"] == ["report", "trip"]
    assert [(k["key_id"], k["public"], k["state"]) for k in entry["keys"]] == [(kid, shown[1], "in use")]
    assert there("trust", *shown).stdout.startswith(f"publisher:web: key {kid} was trusted already")
    assert not (tmp_path / "other-host" / "keys").exists(), "trust writes no private key"
    assert_no_private_key(here, tmp_path / "web.json")
    assert_no_private_key(there, tmp_path / "web.json")


def test_the_policy_and_keys_directory_follow_their_variables(env: dict[str, str], tmp_path: Path) -> None:
    keys = Keys({**env, "CHOREO_POLICY": str(tmp_path / "etc" / "policy.json"),
                 "CHOREO_KEYS_DIR": str(tmp_path / "secrets")})
    kid = new_key_id(keys("new", "agent:report/review"))
    assert (tmp_path / "secrets" / "agent-report-review.json").exists()
    assert (tmp_path / "etc" / "policy.json").exists()
    assert not Path(env["CHOREO_HOME"]).exists()
    assert keys.ls()["policy"] == str(tmp_path / "etc" / "policy.json")
    assert [k["key_id"] for k in keys.keys_of("agent:report/review")] == [kid]


def test_a_local_development_policy_stays_local(env: dict[str, str]) -> None:
    home = Path(env["CHOREO_HOME"])
    local_key(home, COORDINATOR)  # what a service does on first start under `choreo up`
    keys = Keys(env)
    keys("new", "publisher:web")
    data = keys.ls()
    assert data["local"] is True
    assert sorted(i["identity"] for i in data["identities"]) == ["coordinator", "publisher:web"]
    assert "(local development" in keys("ls").stdout


def test_bad_input_is_one_line_exit_2_and_changes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    keys = Keys(env)
    existing = tmp_path / "taken.json"
    existing.write_text("{}")
    assert keys.error("new", "root").startswith("error: not an identity: 'root'")
    assert keys.error("new", "agent:report/draft", "--goals", "report") == \
        "error: --goals is for publisher identities, not agent:report/draft"
    assert keys.error("new", "publisher:web", "--goals", "a b") == \
        "error: --goals 'a b': expected workflow names separated by commas, or *"
    assert keys.error("new", "coordinator", "--out", str(existing)) == \
        f"error: {existing} exists: a key is never overwritten"
    assert keys.error("trust", "coordinator", "ed25519:AAAA") == "error: an Ed25519 public key has 32 bytes, got 3"
    assert keys.error("ls", code=1).startswith("error: no policy at ")  # nothing was trusted
    # A private key file with its words swapped: the error never quotes the seed.
    good = tmp_path / "good.json"
    keys("new", "coordinator", "--out", str(good))
    swapped = tmp_path / "swapped"
    swapped.write_text(f"{seed(good)} coordinator\n")
    assert keys.error("show-public", str(swapped)) == \
        f"error: {swapped}: not a private key (a key file's JSON, or '<identity> <base64 seed>')"
    public = keys("show-public", str(good)).stdout.split()[1]
    assert keys.error("trust", "operator:mallory", public).endswith(" already speaks for coordinator")
    assert_no_private_key(keys, good)


def test_a_key_the_policy_cannot_trust_is_not_left_behind(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "policy.json"
    broken.write_text('{"identities": {"nobody": {}}}')
    keys = Keys({**env, "CHOREO_POLICY": str(broken)})
    assert keys.error("new", "coordinator", "--out", str(tmp_path / "k.json")).startswith(
        f"error: {broken}: not an identity")
    assert keys.error("new", "coordinator").startswith(f"error: {broken}: not an identity")
    assert not (tmp_path / "k.json").exists()
    assert list((Path(env["CHOREO_HOME"]) / "keys").iterdir()) == []
