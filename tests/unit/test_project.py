"""Which agents `choreo up` runs: --agent, then a project file, then entry points, then services/."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import ROOT

from choreograph.cli._init import init
from choreograph.errors import ConfigurationError, ReplayError
from choreograph.examples.report import AGENTS
from choreograph.runtime import discover, project_root
from choreograph.runtime._project import ENTRY_POINT_GROUP, apply_defaults, find_project, from_file
from choreograph.runtime._stackstate import write_state
from choreograph.sandbox._run import agent_target

COORDINATOR = [sys.executable, "-m", "choreograph", "coordinator", "run"]
INDEX = [sys.executable, "-m", "choreograph", "index", "run"]


def targets(root: Path, agents: tuple[str, ...] = ()) -> dict[str, str]:
    """The agents a project runs; every project runs the coordinator and the workflow indexer first."""
    specs = discover(root, agents)
    assert [(s.name, s.argv) for s in specs[:2]] == [("coordinator", COORDINATOR), ("index", INDEX)]
    return {spec.name: spec.argv[-1] for spec in specs[2:]}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution declaring one agent in the choreograph.agents entry points."""
    site = tmp_path / "site"
    info = site / "plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbilling = plugin.billing:agent\n")
    monkeypatch.syspath_prepend(str(site))
    assert [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)] == ["plugin.billing:agent"]
    return site


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def test_the_coordinator_needs_no_file_and_an_empty_directory_is_a_project(empty: Path) -> None:
    assert project_root() == empty.resolve()
    assert targets(empty) == {}


def test_entry_points_of_installed_packages(empty: Path, installed: Path) -> None:
    assert targets(empty) == {"billing": "plugin.billing:agent"}


def test_a_project_file_wins_over_entry_points(empty: Path, installed: Path) -> None:
    (empty / "choreo.toml").write_text('agents = ["shop.orders:agent", "shop.refunds:worker"]\n'
                                       'instances = {"shop.orders" = 2}\n')
    assert targets(empty) == {"shop.orders": "shop.orders:agent", "shop.orders-2": "shop.orders:agent",
                              "shop.refunds.worker": "shop.refunds:worker"}


def test_agent_options_win_over_everything(empty: Path, installed: Path) -> None:
    (empty / "choreo.toml").write_text('agents = ["shop.orders:agent"]\n')
    assert targets(empty, ("mine.a:agent",)) == {"mine.a": "mine.a:agent"}


def test_pyproject_tool_table_found_from_a_subdirectory(empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (empty / "pyproject.toml").write_text('[project]\nname = "shop"\n\n[tool.choreograph]\n'
                                          'agents = ["shop.orders:agent"]\nnamespace = "shop"\n')
    (empty / "src").mkdir()
    monkeypatch.chdir(empty / "src")
    project = find_project()
    assert (project.root, project.namespace, project.broker) == (empty.resolve(), "shop", None)
    assert targets(project.root) == {"shop.orders": "shop.orders:agent"}


def test_a_pyproject_without_the_table_is_not_a_project_file(empty: Path, installed: Path) -> None:
    (empty / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert find_project().file is None
    assert targets(empty) == {"billing": "plugin.billing:agent"}


def test_the_older_services_convention_still_works(empty: Path) -> None:
    (empty / "services" / "shop").mkdir(parents=True)
    for name in ("__init__.py", "orders.py", "_shared.py"):
        (empty / "services" / "shop" / name).write_text("")
    assert targets(empty) == {"shop.orders": "services.shop.orders:agent"}


def test_this_repository_runs_the_example_agents_through_its_pyproject() -> None:
    assert list(targets(ROOT).values()) == list(AGENTS)
    assert list(targets(ROOT)) == [f"report.{step}" for step in ("research", "analyze", "chart", "draft", "review")]


@pytest.mark.parametrize(("text", "message"), [
    ("agents = [\"no_colon\"]\n", "agents must be a list"),
    ("agents = \"a:b\"\n", "agents must be a list"),
    ("instances = {x = 0}\n", "instances must map"),
    ("namespace = 3\n", "namespace must be a string"),
    ("agent = []\n", "unknown setting(s) ['agent']"),
    ("agents = [\n", "not TOML"),
])
def test_a_bad_project_file_is_a_configuration_error(empty: Path, text: str, message: str) -> None:
    (empty / "choreo.toml").write_text(text)
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        discover(project_root())


def test_an_agent_option_must_name_module_and_attribute(empty: Path) -> None:
    with pytest.raises(ConfigurationError, match="expected MODULE:ATTR"):
        discover(empty, ("shop.orders",))


def test_init_writes_a_project_that_discovery_finds(empty: Path) -> None:
    written = init(empty / "shop", "order_flow")
    assert {str(p.relative_to(empty / "shop")) for p in written} == {
        "choreo.toml", "conftest.py", "order_flow/__init__.py", "order_flow/_events.py", "order_flow/greet.py",
        "order_flow/reply.py", "schemas/order_flow/goal.avsc", "schemas/order_flow/greeted.avsc",
        "schemas/order_flow/replied.avsc", "tests/test_order_flow.py"}
    assert "class OrderFlowGoal(Event" in (empty / "shop" / "order_flow" / "_events.py").read_text()
    assert targets(empty / "shop") == {"order_flow.greet": "order_flow.greet:agent",
                                       "order_flow.reply": "order_flow.reply:agent"}


def test_init_writes_nothing_over_an_existing_file(empty: Path) -> None:
    (empty / "choreo.toml").write_text("agents = []\n")
    with pytest.raises(ConfigurationError, match="exists already; nothing written"):
        init(empty)
    assert sorted(p.name for p in empty.iterdir()) == ["choreo.toml"]


@pytest.mark.parametrize("name", ["Hello", "1st", "with-dash", "class", ""])
def test_init_wants_a_package_name(empty: Path, name: str) -> None:
    with pytest.raises(ConfigurationError, match="expected a Python package name"):
        init(empty, name)


def test_replay_finds_an_agent_in_the_running_stack_then_in_the_project(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_HOME", str(empty / "home"))
    with pytest.raises(ReplayError, match=r"no agent of report\.chart"):
        agent_target(empty, "report", "chart")
    (empty / "home").mkdir()
    write_state({"services": [{"name": "coordinator", "argv": COORDINATOR},
                              {"name": "report.chart", "argv": ["python", "-m", "choreograph", "agent", "run",
                                                                "choreograph.examples.report.chart:agent"]}]})
    assert agent_target(empty, "report", "chart") == "choreograph.examples.report.chart:agent"
    (empty / "choreo.toml").write_text('agents = ["choreograph.examples.report.draft:agent"]\n')
    assert agent_target(empty, "report", "draft") == "choreograph.examples.report.draft:agent"


def test_replay_imports_the_projects_agents_from_its_directory_wherever_it_runs(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the services import them (they run in the project's directory), not from the current one."""
    monkeypatch.setenv("CHOREO_HOME", str(empty / "home"))
    init(empty / "shop", "replayed_shop")
    monkeypatch.chdir(empty / "shop" / "tests")
    before = list(sys.path)
    assert agent_target(project_root(), "replayed_shop", "reply") == "replayed_shop.reply:agent"
    assert sys.path == before

def test_the_project_files_namespace_and_broker_are_defaults_the_environment_overrides(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (empty / "choreo.toml").write_text('namespace = "shop"\nbroker = "kafka:9092"\n')
    monkeypatch.setenv("CHOREO_NAMESPACE", "")  # unset to apply_defaults, and restored after the test
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "mine:9092")
    apply_defaults(find_project())
    assert (os.environ["CHOREO_NAMESPACE"], os.environ["KAFKA_BOOTSTRAP_SERVERS"]) == ("shop", "mine:9092")


def test_the_project_files_kafka_table_gives_the_security_variables_defaults(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (empty / "choreo.toml").write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
                                       'sasl_username = "shop"\nssl_cafile = "certs/ca.pem"\n')
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SSL_CAFILE"):
        # Empty is unset to apply_defaults; setenv (unlike delenv of an absent variable) restores it after.
        monkeypatch.setenv(f"CHOREO_KAFKA_{name}", "")
    monkeypatch.setenv("CHOREO_KAFKA_SASL_USERNAME", "me")
    apply_defaults(find_project())
    assert os.environ["CHOREO_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert os.environ["CHOREO_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert os.environ["CHOREO_KAFKA_SASL_USERNAME"] == "me", "the environment wins"
    # A relative file is the project's, whichever directory a command runs from.
    assert os.environ["CHOREO_KAFKA_SSL_CAFILE"] == str(empty / "certs" / "ca.pem")
    assert from_file("CHOREO_KAFKA_SASL_MECHANISM") == empty / "choreo.toml"
    assert from_file("CHOREO_KAFKA_SASL_USERNAME") is None


@pytest.mark.parametrize(("text", "message"), [
    ('[kafka]\nsasl_password = "hunter2"\n', "kafka.sasl_password: passwords are not read from the project file"),
    ('[kafka]\nssl_key_password = "x"\n', "set CHOREO_KAFKA_SSL_KEY_PASSWORD"),
    ('[kafka]\nprotocol = "SSL"\n', "unknown kafka setting(s) ['protocol']"),
    ('[kafka]\nsasl_username = 3\n', "kafka settings must be strings"),
    ('kafka = "SSL"\n', "kafka must be a table"),
])
def test_a_bad_kafka_table_is_a_configuration_error_that_never_quotes_a_password(
        empty: Path, text: str, message: str) -> None:
    (empty / "choreo.toml").write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        find_project()
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_project_files_stack_is_found_from_its_subdirectories(empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (empty / "choreo.toml").write_text('agents = ["shop.orders:agent"]\n')
    (empty / "shop" / "deep").mkdir(parents=True)
    monkeypatch.chdir(empty / "shop" / "deep")
    monkeypatch.setenv("CHOREO_HOME", "")  # unset to apply_defaults, and restored after the test
    apply_defaults(find_project())
    assert os.environ["CHOREO_HOME"] == str(empty / ".choreo")
    assert from_file("CHOREO_HOME") == empty / "choreo.toml"

    monkeypatch.setenv("CHOREO_HOME", "/elsewhere")
    apply_defaults(find_project())
    assert os.environ["CHOREO_HOME"] == "/elsewhere", "the environment wins"


def test_without_a_project_file_choreo_home_stays_the_current_directorys(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_HOME", "")
    apply_defaults(find_project())
    assert os.environ["CHOREO_HOME"] == ""
