"""`choreo init [DIRECTORY] [--workflow NAME]`: a starter project that runs at once.

One workflow of two agents (`greet` consumes the goal, `reply` consumes what greet completes with),
their events bound to Avro schemas, a project file naming the agents, and a test using the saga test
kit. `choreo up` in the directory starts them; `choreo publish NAME --data '{"name": "Ada"}' --wait 30`
completes; `pytest` passes.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from ..errors import ConfigurationError

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")

_FILES: dict[str, str] = {
    "choreo.toml": """\
# The agents `choreo up` starts here (see choreograph's README, "Projects").
agents = ["$wf.greet:agent", "$wf.reply:agent"]
# instances = { "$wf.greet" = 2 }
# namespace = "$wf"
# broker = "localhost:9092"
""",
    "conftest.py": '"""Lets tests import this project\'s packages: pytest puts this directory on sys.path."""\n',
    "$wf/__init__.py": '"""The `$wf` workflow: greet the goal\'s name, then reply to the greeting."""\n',
    "$wf/_events.py": '''\
"""Events of the `$wf` workflow, each bound to its Avro schema in schemas/$wf/ (the source of truth)."""

from pathlib import Path

from choreograph import Event

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "$wf"


class ${Wf}Goal(Event, schema=SCHEMAS / "goal.avsc"):
    """What `choreo publish $wf` sends: whom to greet."""

    name: str


class Greeted(Event, schema=SCHEMAS / "greeted.avsc"):
    """greet's result."""

    name: str
    greeting: str


class Replied(Event, schema=SCHEMAS / "replied.avsc"):
    """reply's result: the workflow's last step."""

    greeting: str
    reply: str
''',
    "$wf/greet.py": '''\
"""greet: the first step of `$wf`; it consumes the goal."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import Greeted, ${Wf}Goal

agent = Agent(workflow="$wf", step="greet")


@agent.handler
async def greet(ctx: StepContext, goal: ${Wf}Goal) -> Greeted:
    """Greet the goal's name."""
    return Greeted(name=goal.name, greeting=f"Hello, {goal.name}!")


@agent.compensation
async def take_back(ctx: StepContext, request: CompensationRequested) -> None:
    """Undo the greeting when a later step fails."""
    ctx.log.info("greet: taking back the greeting of %s", ctx.workflow_id)
''',
    "$wf/reply.py": '''\
"""reply: the second step of `$wf`; it consumes what greet completes with."""

from choreograph import Agent, StepContext

from ._events import Greeted, Replied

agent = Agent(workflow="$wf", step="reply")


@agent.handler
async def reply(ctx: StepContext, greeted: Greeted) -> Replied:
    """Reply to the greeting."""
    return Replied(greeting=greeted.greeting, reply=f"Hi! ({greeted.name})")
''',
    "schemas/$wf/goal.avsc": """\
{"type": "record", "name": "${Wf}Goal", "namespace": "$wf",
 "fields": [{"name": "name", "type": "string"}]}
""",
    "schemas/$wf/greeted.avsc": """\
{"type": "record", "name": "Greeted", "namespace": "$wf",
 "fields": [{"name": "name", "type": "string"}, {"name": "greeting", "type": "string"}]}
""",
    "schemas/$wf/replied.avsc": """\
{"type": "record", "name": "Replied", "namespace": "$wf",
 "fields": [{"name": "greeting", "type": "string"}, {"name": "reply", "type": "string"}]}
""",
    "tests/test_$wf.py": '''\
"""The `$wf` workflow end to end on the in-memory log (no broker): choreograph's saga test kit."""

import asyncio

from choreograph import OutcomeStatus
from choreograph.testing import SagaKit

from $wf import greet, reply


async def _completes() -> None:
    async with SagaKit(greet.agent, reply.agent) as kit:
        goal = await kit.given_goal("$wf", {"name": "Ada"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        (replied,) = await kit.emitted(goal, kind="step_completed", step="reply")
        assert replied.data is not None  # None only for an event that could not be decoded
        assert replied.data["reply"] == "Hi! (Ada)"


def test_a_goal_completes() -> None:
    asyncio.run(_completes())
''',
}


def files(workflow: str) -> dict[str, str]:
    """The starter project's files for a workflow: relative path -> text."""
    values = {"wf": workflow, "Wf": "".join(part.capitalize() for part in workflow.split("_"))}
    return {Template(path).substitute(values): Template(text).substitute(values) for path, text in _FILES.items()}


def init(directory: Path, workflow: str = "hello") -> list[Path]:
    """Write a starter project into `directory` (made if missing).

    Args:
        directory: Where to write it.
        workflow: The workflow's name, also its Python package's: lower case letters, digits and _.

    Returns:
        The files written, in order.

    Raises:
        ConfigurationError: A bad workflow name, or a file that would be written exists already
            (nothing is written then).
    """
    if not _IDENTIFIER.match(workflow) or keyword.iskeyword(workflow):
        raise ConfigurationError(f"workflow {workflow!r}: expected a Python package name (a-z, 0-9, _)")
    wanted = {directory / path: text for path, text in files(workflow).items()}
    existing = sorted(str(path) for path in wanted if path.exists())
    if existing:
        raise ConfigurationError(f"{', '.join(existing)}: exists already; nothing written")
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(wanted)
