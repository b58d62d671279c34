"""Where a service finds its key and the policy (choreograph.transport's keyring): files and
environment variables, local development keys made by themselves only where the policy is local,
errors that say which `choreo keys` command helps and never quote a private key."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import orjson
import pytest

from choreograph.errors import ConfigurationError
from choreograph.security import COORDINATOR, Identity, KeyPair, Policy, PolicyFile, local_key, write_policy
from choreograph.transport import (
    Trust,
    keys_dir,
    operator_identity,
    policy_path,
    service_key,
    service_policy,
    verification_off,
)
from choreograph.transport._settings import check_env

DRAFT = Identity.agent("report", "draft")
REVIEW = Identity.agent("report", "review")


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A CHOREO_HOME of its own, with no other choreograph variable set."""
    for name in ("CHOREO_POLICY", "CHOREO_KEYS_DIR", "CHOREO_KEY", "CHOREO_KEY_FILE", "CHOREO_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "home"
    monkeypatch.setenv("CHOREO_HOME", str(path))
    return path


def managed_policy(home: Path, *pairs: KeyPair) -> Path:
    """A policy an operator made (not local), trusting `pairs`."""
    policy = Policy()
    for pair in pairs:
        policy = policy.trust(pair.identity, pair.public)
    write_policy(home / "policy.json", policy)
    return home / "policy.json"


def seed_of(path: Path) -> str:
    return str(orjson.loads(path.read_bytes())["seed"])


def test_paths_default_to_choreo_home_and_follow_the_variables(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    assert policy_path() == home.resolve() / "policy.json"
    assert keys_dir() == home.resolve() / "keys"
    monkeypatch.setenv("CHOREO_POLICY", str(tmp_path / "etc" / "policy.json"))
    monkeypatch.setenv("CHOREO_KEYS_DIR", str(tmp_path / "secrets"))
    assert policy_path() == tmp_path / "etc" / "policy.json"
    assert keys_dir() == tmp_path / "secrets"


@pytest.mark.parametrize(("value", "off"), [(None, False), ("", False), ("on", False), ("off", True)])
def test_verification_is_on_unless_turned_off_explicitly(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                         value: str | None, off: bool) -> None:
    if value is not None:
        monkeypatch.setenv("CHOREO_VERIFY", value)
    assert verification_off() is off
    check_env()


@pytest.mark.parametrize("value", ["no", "OFF", "false", "0", "of"])
def test_any_other_verify_value_is_an_error_naming_the_variable(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                value: str) -> None:
    # A typo must neither turn checks off nor be ignored.
    monkeypatch.setenv("CHOREO_VERIFY", value)
    message = f"CHOREO_VERIFY={value!r}: expected on or off"
    with pytest.raises(ConfigurationError, match=f"^{message}$"):
        verification_off()
    with pytest.raises(ConfigurationError, match=f"^{message}$"):
        check_env()


def test_a_fresh_home_makes_a_local_key_once_and_trusts_it_in_a_local_policy(home: Path) -> None:
    first = service_key(DRAFT)
    assert service_key(DRAFT).key_id == first.key_id
    assert (home / "keys" / "agent-report-draft.json").exists()
    policy = service_policy().current()
    assert policy.local
    assert policy.key(first.key_id) == (DRAFT, policy.identities[DRAFT].keys[0])
    assert orjson.loads((home / "policy.json").read_bytes())["local"] is True
    # Another service of the same home joins the same policy.
    coordinator = service_key(COORDINATOR)
    after = PolicyFile(home / "policy.json").current()
    assert sorted(map(str, after.identities)) == ["agent:report/draft", "coordinator"]
    assert after.local
    assert after.key(coordinator.key_id) is not None


def test_a_local_key_is_trusted_again_in_a_local_policy_made_anew(home: Path) -> None:
    pair = service_key(DRAFT)
    (home / "policy.json").unlink()
    assert service_key(DRAFT).key_id == pair.key_id
    assert PolicyFile(home / "policy.json").current().key(pair.key_id) is not None


def test_a_missing_default_policy_is_made_empty_and_local_for_a_verifier(home: Path) -> None:
    live = service_policy()
    assert live.current() == Policy(local=True)
    pair = service_key(REVIEW)  # a service starting later adds its key to it
    assert PolicyFile(live.path).current().key(pair.key_id) is not None


def test_an_operators_policy_makes_no_key_and_says_which_command_does(home: Path) -> None:
    managed_policy(home, KeyPair.generate(COORDINATOR))
    with pytest.raises(ConfigurationError) as refused:
        service_key(DRAFT)
    assert str(refused.value) == ("no key for agent:report/draft: `choreo keys new agent:report/draft` makes one "
                                  "(or set CHOREO_KEY_FILE)")
    assert not (home / "keys").exists()
    assert list(PolicyFile(home / "policy.json").current().identities) == [COORDINATOR]
    # local_key itself refuses too: no caller can trust a key in an operator's policy by mistake.
    with pytest.raises(ConfigurationError, match="not a local development policy"):
        local_key(home, DRAFT)


def test_an_operators_policy_reads_keys_from_the_keys_directory(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    pair = KeyPair.generate(DRAFT)
    managed_policy(home, pair)
    monkeypatch.setenv("CHOREO_KEYS_DIR", str(tmp_path / "secrets"))
    pair.save(tmp_path / "secrets" / "agent-report-draft.json")
    assert service_key(DRAFT).key_id == pair.key_id


def test_a_policy_named_elsewhere_must_exist_and_makes_no_key(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("CHOREO_POLICY", str(tmp_path / "etc" / "policy.json"))
    with pytest.raises(ConfigurationError, match=r"^CHOREO_POLICY=.*policy.json: no such policy file "
                                                 r"\(`choreo keys new IDENTITY` or `choreo keys trust` makes one\)$"):
        service_policy()
    with pytest.raises(ConfigurationError, match=r"^no key for agent:report/draft"):
        service_key(DRAFT)
    assert not home.exists()


def test_choreo_key_wins_and_its_errors_never_quote_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = KeyPair.generate(DRAFT)
    pair.save(home / "k.json")
    secret = seed_of(home / "k.json")
    monkeypatch.setenv("CHOREO_KEY", f"agent:report/draft {secret}")
    monkeypatch.setenv("CHOREO_KEY_FILE", str(home / "elsewhere.json"))  # not read: CHOREO_KEY wins
    assert service_key(DRAFT).key_id == pair.key_id
    assert not (home / "policy.json").exists(), "no local key made"
    with pytest.raises(ConfigurationError) as mismatch:
        service_key(REVIEW)
    assert str(mismatch.value) == "CHOREO_KEY holds a key of agent:report/draft, not of agent:report/review"
    raw = base64.b64decode(secret)
    for broken in (f"agent:report/draft {secret[:-4]}", f"agent:report/draft {secret}!",
                   f"agent:report/drafts/x {secret}", f"{secret} agent:report/draft",
                   base64.b64encode(raw + raw).decode()):
        monkeypatch.setenv("CHOREO_KEY", broken)
        with pytest.raises(ConfigurationError) as refused:
            service_key(DRAFT)
        message = str(refused.value)
        assert message.startswith("CHOREO_KEY: "), message
        assert secret[:8] not in message, message
        assert secret[-8:] not in message, message


def test_a_key_file_is_read_and_must_be_the_identitys(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    pair = KeyPair.generate(DRAFT)
    pair.save(tmp_path / "draft.json")
    monkeypatch.setenv("CHOREO_KEY_FILE", str(tmp_path / "draft.json"))
    assert service_key(DRAFT).key_id == pair.key_id
    with pytest.raises(ConfigurationError, match=r"^CHOREO_KEY_FILE=.*draft.json holds a key of "
                                                 r"agent:report/draft, not of coordinator$"):
        service_key(COORDINATOR)
    monkeypatch.setenv("CHOREO_KEY_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigurationError, match=r"^CHOREO_KEY_FILE=.*missing.json: cannot read the key file: "
                                                 "No such file or directory$"):
        service_key(DRAFT)
    secret = seed_of(tmp_path / "draft.json")
    (tmp_path / "broken.json").write_text((tmp_path / "draft.json").read_text().replace('"seed"', '"sead"'))
    monkeypatch.setenv("CHOREO_KEY_FILE", str(tmp_path / "broken.json"))
    with pytest.raises(ConfigurationError, match=r"broken\.json: not a private key") as refused:
        service_key(DRAFT)
    assert secret[:8] not in str(refused.value)


def test_a_key_in_the_keys_directory_of_another_identity_is_refused(home: Path) -> None:
    intruder = KeyPair.generate(REVIEW)
    managed_policy(home, intruder)
    intruder.save(home / "keys" / "agent-report-draft.json")
    with pytest.raises(ConfigurationError, match=r"agent-report-draft\.json holds a key of "
                                                 r"agent:report/review, not of agent:report/draft$"):
        service_key(DRAFT)


def test_the_local_flag_round_trips_and_survives_changes() -> None:
    pair = KeyPair.generate(DRAFT)
    local = Policy(local=True).trust(DRAFT, pair.public)
    assert Policy.from_json(local.to_json()) == local
    assert Policy.from_json(local.retire(pair.key_id).to_json()).local
    assert b"local" not in Policy().trust(DRAFT, pair.public).to_json()
    assert not Policy.from_json(b'{"identities": {}}').local
    with pytest.raises(ConfigurationError, match='"local" is true or false, not str'):
        Policy.from_json(b'{"identities": {}, "local": "yes"}')


def test_services_starting_together_lose_no_local_key(home: Path) -> None:
    # `choreo up` starts every service at once: each trusts its key under the policy's lock.
    identities = [Identity.agent("report", f"step{i}") for i in range(8)]
    made: dict[Identity, str] = {}

    def start(identity: Identity) -> None:
        made[identity] = service_key(identity).key_id

    threads = [threading.Thread(target=start, args=(i,)) for i in identities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    policy = PolicyFile(home / "policy.json").current()
    assert policy.local
    assert len(made) == len(identities)
    assert {identity: policy.key(kid) is not None for identity, kid in made.items()} == dict.fromkeys(identities, True)



def test_a_persons_tools_sign_as_the_operator_choreo_operator_names(home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHOREO_OPERATOR", raising=False)
    assert operator_identity() == Identity.parse("operator:local")
    # In a local policy its key is made and trusted like a service's: a restore is signed out of the box.
    pair = service_key(operator_identity())
    trusted = PolicyFile(home / "policy.json").current().key(pair.key_id)
    assert trusted is not None
    assert trusted[0] == Identity.parse("operator:local")
    monkeypatch.setenv("CHOREO_OPERATOR", "alice")
    assert operator_identity() == Identity.parse("operator:alice")
    monkeypatch.setenv("CHOREO_OPERATOR", "alice smith")
    with pytest.raises(ConfigurationError, match=r"^CHOREO_OPERATOR='alice smith': expected a name"):
        operator_identity()


def test_a_broken_policy_edit_keeps_the_last_good_policy(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A running service must neither stop nor trust anything new when someone half-edits the file."""
    pair = KeyPair.generate(DRAFT)
    path = managed_policy(home, pair)
    policy = PolicyFile(path, every_s=0)
    path.write_text('{"identities": [')  # an editor's half-written save
    assert policy.current().key(pair.key_id) is not None
    assert "keeping the policy read before" in caplog.text
    write_policy(path, Policy())  # fixed: the new policy is read
    assert policy.current().key(pair.key_id) is None


def test_an_unknown_key_id_reads_a_policy_changed_a_moment_ago(home: Path) -> None:
    """A service that has just made and trusted its key is believed at once by one that read the policy
    an instant before (before: a second's rate limit refused its first records for good)."""
    path = managed_policy(home)
    policy = PolicyFile(path, every_s=3600)
    policy.current()  # checked now: not again within the hour
    pair = KeyPair.generate(DRAFT)
    write_policy(path, Policy().trust(DRAFT, pair.public))
    assert policy.current().key(pair.key_id) is None
    assert policy.current(force=True).key(pair.key_id) is not None


def test_a_service_whose_key_is_not_trusted_says_so_at_start(home: Path, caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    managed_policy(home, KeyPair.generate(REVIEW))
    pair = KeyPair.generate(DRAFT)
    pair.save(home / "draft.json")
    monkeypatch.setenv("CHOREO_KEY_FILE", str(home / "draft.json"))
    trust = Trust.from_env(DRAFT)
    assert trust.identity == DRAFT
    assert f"key {pair.key_id}, which" in caplog.text
    assert "does not trust" in caplog.text
