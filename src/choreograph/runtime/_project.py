"""A project: where `choreo up` runs, and which agents it starts.

The project's directory is the nearest one, from the current directory up, holding a project file
(`choreo.toml`, or a `pyproject.toml` with a `[tool.choreograph]` table) or a `services/` directory
(the older convention); else the current directory. Its agents come from the first of these that
names any:

1. `choreo up --agent MODULE:ATTR` (repeatable);
2. the project file's `agents = ["MODULE:ATTR", ...]`;
3. the `choreograph.agents` entry points of installed packages (`name = "MODULE:ATTR"`);
4. every public module of a `services/<workflow>/` package (module-level `agent`).

The first source that names agents is the whole list: a project file is how a project says exactly
what runs, whatever else is installed. The project file may also set `instances` (copies per agent,
by agent name or MODULE:ATTR), `namespace` and `broker` (defaults for CHOREO_NAMESPACE and
KAFKA_BOOTSTRAP_SERVERS), and a `kafka` table of TLS and SASL settings (defaults for the
CHOREO_KAFKA_* variables; file paths relative to the project file). The environment always wins.
Passwords are refused in the file: a project file is committed, and a password there would be too.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

ENTRY_POINT_GROUP = "choreograph.agents"
PROJECT_FILE = "choreo.toml"
# The project file's [kafka] keys: each is the default of CHOREO_KAFKA_<KEY> (transport._kafka_security).
KAFKA_KEYS = ("security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
_KAFKA_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
_KAFKA_SECRETS = ("sasl_password", "ssl_key_password")
_SETTINGS = ("agents", "instances", "namespace", "broker", "kafka")
# Variable -> the project file that set it in this process (apply_defaults), for `choreo config`.
_applied: dict[str, tuple[Path, str]] = {}


@dataclass(frozen=True)
class AgentEntry:
    """An agent to start: its service name (for logs and `choreo ps`) and its MODULE:ATTR."""

    name: str
    target: str
    instances: int = 1


@dataclass(frozen=True)
class Project:
    """A project's directory and what its project file says (empty without one)."""

    root: Path
    file: Path | None = None
    agents: tuple[str, ...] = ()
    instances: Mapping[str, int] = field(default_factory=dict)
    namespace: str | None = None
    broker: str | None = None
    kafka: Mapping[str, str] = field(default_factory=dict)

    def defaults(self) -> dict[str, str]:
        """The environment variables this project file gives a default for: name -> value.

        CHOREO_HOME is the project's `.choreo` (as `git` finds its repository from a subdirectory):
        `choreo ps`, `publish`, `replay` and `down` find the project's stack from anywhere inside it.
        """
        values = {"CHOREO_NAMESPACE": self.namespace, "KAFKA_BOOTSTRAP_SERVERS": self.broker,
                  "CHOREO_HOME": str(self.root / ".choreo") if self.file is not None else None}
        values.update({f"CHOREO_KAFKA_{key.upper()}": value for key, value in self.kafka.items()})
        return {name: value for name, value in values.items() if value}


def _table(path: Path) -> dict[str, Any] | None:
    """The choreograph settings of a project file: all of choreo.toml, [tool.choreograph] of pyproject.toml."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not TOML: {exc}") from exc
    if path.name == PROJECT_FILE:
        return document
    table = document.get("tool", {}).get("choreograph")
    return table if isinstance(table, dict) else None


def _strings(path: Path, key: str, value: object) -> tuple[str, ...]:
    """`value` as a tuple of MODULE:ATTR strings, or a ConfigurationError naming the file and key."""
    if not isinstance(value, list) or not all(isinstance(v, str) and ":" in v for v in value):
        raise ConfigurationError(f"{path}: {key} must be a list of \"MODULE:ATTR\" strings")
    return tuple(value)


def _kafka(root: Path, path: Path, table: object) -> dict[str, str]:
    """The [kafka] table, checked: known keys, string values, files relative to the project's directory."""
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: kafka must be a table of {', '.join(KAFKA_KEYS)}")
    secrets = sorted(set(table) & set(_KAFKA_SECRETS))
    if secrets:
        raise ConfigurationError(f"{path}: kafka.{secrets[0]}: passwords are not read from the project file "
                                 f"(it is committed); set CHOREO_KAFKA_{secrets[0].upper()}")
    unknown = sorted(set(table) - set(KAFKA_KEYS))
    if unknown:
        raise ConfigurationError(f"{path}: unknown kafka setting(s) {unknown}; known: {', '.join(KAFKA_KEYS)}")
    if not all(isinstance(value, str) for value in table.values()):
        raise ConfigurationError(f"{path}: kafka settings must be strings")
    return {key: str(root / value) if key in _KAFKA_FILES else value for key, value in table.items()}


def _project(root: Path, path: Path, table: Mapping[str, Any]) -> Project:
    """The project described by a project file's settings, checked."""
    unknown = sorted(set(table) - set(_SETTINGS))
    if unknown:
        raise ConfigurationError(f"{path}: unknown setting(s) {unknown}; known: {', '.join(_SETTINGS)}")
    instances = table.get("instances", {})
    if not isinstance(instances, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in instances.values()):
        raise ConfigurationError(f"{path}: instances must map agent names to counts of at least 1")
    for key in ("namespace", "broker"):
        if not isinstance(table.get(key, ""), str):
            raise ConfigurationError(f"{path}: {key} must be a string")
    return Project(root, path, _strings(path, "agents", table.get("agents", [])), instances,
                   table.get("namespace"), table.get("broker"), _kafka(root, path, table.get("kafka", {})))


def find_project(start: Path | None = None) -> Project:
    """The project that `start` (default: the current directory) is in.

    Args:
        start: Where to look from; its parents are looked at too.

    Returns:
        The nearest directory with a project file (and what it says) or a services/ directory; else
        `start` itself, with no project file.

    Raises:
        ConfigurationError: A project file cannot be read, is not TOML, or holds bad settings.
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        for path in (candidate / PROJECT_FILE, candidate / "pyproject.toml"):
            if path.is_file() and (table := _table(path)) is not None:
                return _project(candidate, path, table)
        if (candidate / "services").is_dir():
            return Project(candidate)
    return Project(here)


def apply_defaults(project: Project) -> None:
    """Set the variables the project file gives defaults for (see Project.defaults) where the environment does not.

    Services `choreo up` starts inherit them; `choreo config` names the file as their source (from_file).
    """
    for name, value in project.defaults().items():
        if not os.environ.get(name) and project.file is not None:
            os.environ[name] = value
            _applied[name] = (project.file, value)


def from_file(variable: str) -> Path | None:
    """The project file that set `variable` in this process (apply_defaults), if one did."""
    path, value = _applied.get(variable, (None, None))
    return path if value is not None and os.environ.get(variable) == value else None


def _name(target: str) -> str:
    """A service name for MODULE:ATTR: the module's last two parts (`report.chart`), and ATTR unless `agent`."""
    module, _, attr = target.partition(":")
    name = ".".join(module.split(".")[-2:])
    return name if attr == "agent" else f"{name}.{attr}"


def _entries(targets: Iterable[tuple[str | None, str]], instances: Mapping[str, int]) -> list[AgentEntry]:
    """One entry per distinct target, named (given name, else from the target), with its instance count."""
    entries: list[AgentEntry] = []
    for given, target in dict.fromkeys(targets):
        name = given or _name(target)
        if any(e.name == name for e in entries):
            name = target.replace(":", ".")
        entries.append(AgentEntry(name, target, instances.get(name, instances.get(target, 1))))
    return entries


def _entry_points() -> list[tuple[str | None, str]]:
    """The `choreograph.agents` entry points of installed packages: (name, MODULE:ATTR), by name."""
    found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted((ep.name, ep.value) for ep in found)


def _services(root: Path) -> list[tuple[str | None, str]]:
    """The older convention: every public module of a services/<workflow>/ package is an agent."""
    services = root / "services"
    if not services.is_dir():
        return []
    found: list[tuple[str | None, str]] = []
    for package in sorted(p for p in services.iterdir() if (p / "__init__.py").is_file()):
        for module in sorted(package.glob("*.py")):
            if not module.name.startswith("_"):
                found.append((f"{package.name}.{module.stem}", f"services.{package.name}.{module.stem}:agent"))
    return found


def agents_of(project: Project, agents: Iterable[str] = ()) -> list[AgentEntry]:
    """The agents a project runs: from the first source that names any (see the module's docstring).

    Args:
        project: The project (see find_project).
        agents: MODULE:ATTR of agents named on the command line; when any, only these run.

    Returns:
        The agents, each with its service name and instance count; empty if no source names any.
    """
    explicit = [(None, target) for target in agents]
    for source in (explicit, [(None, t) for t in project.agents], _entry_points(), _services(project.root)):
        if source:
            return _entries(source, project.instances)
    return []
