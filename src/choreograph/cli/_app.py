"""`choreo`: the command line. A thin front over the library; see README for the contract."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ..errors import EventTooLarge, GoalRejected, GoalValidationError
from ..transport._settings import check_env
from ._agents import agents_app
from ._asyncapi import asyncapi
from ._broker import broker_app
from ._cancel import cancel
from ._config import cli_settings, config
from ._dlq import dlq_app
from ._input import (
    FAILED,
    USAGE,
    JsonFlag,
    debugging,
    duration,
    err,
    fail,
    goal_data,
    one_line,
    positive_seconds,
    root,
    run_async,
    seconds,
    workflow_id,
)
from ._keys import keys_app
from ._ls import index_app, ls
from ._stats import stats
from ._ui import ui

if TYPE_CHECKING:
    from ..saga._replay import Point

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, callback=root,
                  help="Choreographed agent workflows on Kafka.")
agent_app = typer.Typer(no_args_is_help=True, help="Run agents.")
coordinator_app = typer.Typer(no_args_is_help=True, help="Run the saga coordinator.")
app.add_typer(broker_app, name="broker")
app.add_typer(agent_app, name="agent")
app.add_typer(coordinator_app, name="coordinator")
archive_app = typer.Typer(help="Archive every event to Avro files on disk, and restore them into a broker.")
app.add_typer(archive_app, name="archive")
app.add_typer(agents_app, name="agents")
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
app.add_typer(index_app, name="index")
app.command("ls")(ls)
app.command("stats")(stats)
app.command("asyncapi")(asyncapi)
app.command()(config)
app.command()(cancel)
app.command()(ui)

# A workflow id argument: one that cannot be a record's key is an error line and exit 2.
WorkflowId = Annotated[str, typer.Argument(callback=workflow_id, show_default=False)]


@agent_app.command("run")
def agent_run(spec: Annotated[str, typer.Argument(help="MODULE:ATTR of an Agent")]) -> None:
    """Run one agent in this process, in its own consumer group, until SIGTERM."""
    from ..runtime._service import run_agent

    check_env()  # before run_agent configures logging from CHOREO_LOG_LEVEL
    run_agent(spec)


@coordinator_app.command("run")
def coordinator_run() -> None:
    """Run the saga coordinator in this process until SIGTERM."""
    from ..runtime._service import run_coordinator

    check_env()  # before run_coordinator configures logging from CHOREO_LOG_LEVEL
    run_coordinator()


@app.command()
def up(timeout: Annotated[float, typer.Option(help="seconds to wait for readiness", callback=seconds)] = 60.0,
       agent: Annotated[list[str] | None, typer.Option(
           "--agent", metavar="MODULE:ATTR", help="run this agent (repeatable) instead of the project's")] = None,
       as_json: JsonFlag = False) -> None:
    """Start broker (unless configured or running), coordinator and agents, supervised, in the background.

    The agents: `--agent` options, else the project file's (choreo.toml, or the tool.choreograph table in
    pyproject.toml), else installed packages' `choreograph.agents` entry points, else services/.
    """
    from ._stack import exit_on_signals
    from ._stack import up as start_stack

    exit_on_signals()
    started = start_stack(timeout, agent or ())
    if as_json:
        print(orjson.dumps({"services": [{"name": n, "pid": pid} for n, pid in started.items()]}).decode())
    for name, pid in ({} if as_json else started).items():
        print(f"{name}\tpid {pid}")
    if set(started) <= {"coordinator", "index"}:
        print("note: no agents found (--agent, choreo.toml, [tool.choreograph], entry points or services/); "
              "`choreo init` writes a starter project", file=sys.stderr)


@app.command()
def down(as_json: JsonFlag = False) -> None:
    """Stop everything `choreo up` started: its supervisor, the services, the broker if it started one."""
    from ._stack import down as stop_stack

    stopped = stop_stack()
    print(orjson.dumps({"stopped": stopped}).decode() if as_json else " ".join(stopped) or "nothing to stop")


@app.command()
def ps(as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """What `choreo up` runs: pid, state, ready, uptime, restarts, last exit, consumer lag of each service."""
    from ._ps import ps as show

    raise typer.Exit(show(as_json))


@app.command()
def publish(
    workflow: str,
    data: Annotated[str, typer.Option(help="goal data: a JSON object, @FILE holding one, or - to read stdin")],
    wait: Annotated[float | None, typer.Option(help="wait up to SECONDS for the outcome", callback=seconds)] = None,
    deadline: Annotated[str | None, typer.Option(
        help="the workflow's deadline from now, e.g. 30s, 10m, 1h30m: what still runs then is timed out and "
             "compensated, and the outcome is timed_out")] = None,
    no_fail: Annotated[bool, typer.Option("--no-fail", help="with --wait: exit 0 whatever the outcome")] = False,
) -> None:
    """Publish a goal; print {"workflow_id": ...} (and "status" with --wait).

    Exit 2 if the goal is invalid or over the maximum event size (nothing is published); exit 1,
    with "status": "rejected", if the coordinator rejected it (e.g. a duplicate workflow id); with
    --wait, exit 1 when the status is not "completed" (compensated, failed, timed_out, cancelled, or
    still running when the wait ran out), unless --no-fail.
    """
    from ..runtime._client import Client

    payload = goal_data(data)
    within = None if deadline is None else duration(deadline, "--deadline")
    rejected: list[GoalRejected] = []

    async def go() -> dict[str, Any]:
        async with Client(cli_settings(), source="choreo://cli") as client:
            goal = await client.publish(workflow, payload, deadline=within)
            result: dict[str, Any] = {"workflow_id": goal.workflow_id, "workflow": workflow,
                                      "partition": goal.partition, "offset": goal.offset}
            if goal.deadline_ms is not None:
                result["deadline_ms"] = goal.deadline_ms
            if wait is not None:
                try:
                    outcome = await client.wait(goal, wait)
                except GoalRejected as exc:
                    # Published but dead-lettered: the id still leads to the record (`choreo history`).
                    rejected.append(exc)
                    result.update(status="rejected", reason=str(exc))
                    return result
                result["status"] = outcome.status.value if outcome else "running"
                if outcome is not None:
                    result["outcome"] = outcome.model_dump(mode="json")
            return result

    from ..telemetry import setup_tracing

    # With OTEL_* configured, the goal's span (the trace's root) is sent too, before the command exits.
    flush = setup_tracing("choreo")
    try:
        result = run_async(go())
    except GoalValidationError as exc:
        raise fail(str(exc), USAGE) from exc
    except EventTooLarge as exc:
        raise fail(f"{exc} (CHOREO_MAX_EVENT_BYTES)", USAGE) from exc
    except GoalRejected as exc:  # refused as it was published: no id to print
        raise fail(str(exc), FAILED) from exc
    finally:
        if flush is not None:
            flush()
    print(orjson.dumps(result).decode())
    if rejected:
        raise fail(str(rejected[0]), FAILED)
    if wait is not None and not no_fail and result.get("status") != "completed":
        raise typer.Exit(FAILED)


@app.command()
def history(
    workflow_id: WorkflowId,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events until the outcome")] = False,
    to_end: Annotated[bool, typer.Option("--to-end", help="also read past the outcome, to the partition's end")
                      ] = False,
    since: Annotated[str | None, typer.Option(help="ISO time to start reading at (ids that are not UUIDv7)")] = None,
    from_archive: Annotated[Path | None, typer.Option("--from-archive", help="read an archive directory, "
                                                      "not the broker")] = None,
    timeout: Annotated[float | None, typer.Option(help="with --follow: give up after SECONDS", callback=seconds)
                       ] = None,
) -> None:
    """A workflow's events in log order: time, offset, kind, step, source, cause, detail.

    Its dead letters are shown too (kind dead_letter, with the reason), each after the record it copies.
    An event the services refuse (unsigned, badly signed, or its signer may not say it) is marked
    REJECTED with their reason ("rejected" in --json); with CHOREO_VERIFY=off nothing is checked.
    """
    from ..timetravel._history import History
    from ..transport._keyring import service_verifier
    from ._render import Timeline

    since_ms = None if since is None else _point(since).timestamp_ms
    timeline = Timeline(workflow_id, as_json=as_json, stream=follow)

    async def from_broker() -> None:
        async with History(cli_settings()) as reader:
            async for entry in reader.entries(workflow_id, to_end=to_end, follow=follow, timeout_s=timeout,
                                              since_ms=since_ms):
                timeline.add(entry)

    async def from_dir(directory: Path) -> None:
        from ..timetravel._archive import Archive

        archive = Archive(directory)
        for entry in archive.history(workflow_id, service_verifier()):
            timeline.add(entry)
        for problem in archive.problems:
            err(problem, "warning", "yellow")

    run_async(from_broker() if from_archive is None else from_dir(from_archive))
    timeline.done()
    if not timeline.entries:
        raise fail(f"no events of workflow {workflow_id!r}")


def _point(text: str) -> Point:
    """A point of a workflow's history from an option's text (see saga.Point.parse)."""
    from ..saga._replay import Point

    return Point.parse(text)


@app.command()
def state(
    workflow_id: WorkflowId,
    at: Annotated[str | None, typer.Option(help="OFFSET (of the workflow's partition) or ISO TIMESTAMP")] = None,
    diff: Annotated[tuple[str, str] | None, typer.Option(help="A B: what changed between two points")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a summary")] = False,
    from_archive: Annotated[Path | None, typer.Option("--from-archive")] = None,
) -> None:
    """The coordinator's view of a workflow at a point of its history (default: now).

    Rebuilt by folding its events with the coordinator's own code.
    """
    from ..timetravel._state import state_report

    report = run_async(state_report(workflow_id, at=None if at is None else _point(at),
                               diff=None if diff is None else (_point(diff[0]), _point(diff[1])),
                               archive=from_archive))
    if as_json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        from ._render import print_state

        print_state(report)


@app.command()
def record(
    workflow_id: WorkflowId,
    from_archive: Annotated[Path | None, typer.Option("--from-archive")] = None,
) -> None:
    """Write the workflow's recording (JSON lines, replayable: tests/golden/) to stdout."""
    from ..timetravel._recording import record as take

    sys.stdout.buffer.write(run_async(take(cli_settings() if from_archive is None else None, workflow_id,
                                      from_archive)).dumps())


@app.command()
def replay(
    workflow_id: WorkflowId,
    sandbox: Annotated[str, typer.Option(help="sandbox NAME: topics and groups under <namespace>.sandbox.NAME")],
    agents: Annotated[str | None, typer.Option(help="steps to re-run, comma separated; STEP=MODULE:ATTR runs "
                                               "that code (default: every step, or --from-step on)")] = None,
    from_step: Annotated[str | None, typer.Option(help="re-run this step and the steps after it only")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the re-run's outcome", callback=seconds)
                       ] = 60.0,
    from_archive: Annotated[Path | None, typer.Option("--from-archive")] = None,
) -> None:
    """Re-run agents of a recorded workflow in a sandbox, the other agents' recorded outputs fed back.

    Report where the re-run's events differ from the recorded ones. Exit as diff does: 0 the same,
    1 differences, 2 an error (bad input, no such workflow, no broker).
    """
    from ..sandbox._run import rerun
    from ..timetravel._recording import record as take
    from ._render import print_replay

    chosen = None if agents is None else dict(
        (item.split("=", 1)[0].strip(), item.split("=", 1)[1].strip() if "=" in item else None)
        for item in agents.split(",") if item.strip())

    async def go() -> Any:
        settings = cli_settings()
        recording = await take(settings, workflow_id, from_archive)
        return await rerun(settings, recording, sandbox, agents=chosen, from_step=from_step, timeout_s=timeout)

    try:
        report = run_async(go())
    except Exception as exc:  # every error, as diff's 2: 1 is for differences
        if debugging():
            raise
        raise fail(one_line(exc), USAGE) from None
    if as_json:
        print(orjson.dumps(report.json()).decode())
    else:
        print_replay(report)
    if not report.identical:
        raise typer.Exit(1)


@archive_app.callback(invoke_without_command=True)
def archive(
    ctx: typer.Context,
    to: Annotated[Path | None, typer.Option("--to", help="archive directory (created if missing)")] = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="return once every topic is archived to its "
                                             "end, instead of running as a service until SIGTERM")] = False,
    flush_interval: Annotated[float, typer.Option(help="seconds between segment writes",
                                                  callback=positive_seconds)] = 2.0,
) -> None:
    """Copy every record of the namespace's topics into Avro segments under DIR (resumable)."""
    if ctx.invoked_subcommand is not None:
        return
    if to is None:
        raise fail("give --to DIR (or a subcommand: restore)", USAGE)
    from ..runtime._service import configure_logging, serve
    from ..timetravel._archiver import Archiver
    from ..transport._keyring import service_verifier

    check_env()  # before logging is configured from CHOREO_LOG_LEVEL and CHOREO_LOG_FORMAT
    configure_logging("archive")
    # Only a restore an operator signed is skipped as restored: a forged marker silences nothing.
    archiver = Archiver(cli_settings(), to, flush_interval_s=flush_interval, verifier=service_verifier())
    if until_idle:
        async def once() -> None:
            async with archiver:
                await archiver.run(until_idle=True)

        run_async(once())
        print(orjson.dumps({"archived": archiver.archived, "to": str(to)}).decode())
    else:
        run_async(serve(archiver))


@archive_app.command("restore")
def archive_restore(
    directory: Path,
    force: Annotated[bool, typer.Option("--force", help="restore even into a broker that has workflows")] = False,
) -> None:
    """Re-publish an archive into an empty broker: history, state and replay work again.

    Running services treat the restored events as history, never as new work. The restore's markers
    are signed as the operator (`operator:<CHOREO_OPERATOR>`, default `operator:local`); the
    restored records keep their own signatures.
    """
    from ..timetravel._archive import restore

    settings = cli_settings()
    report = run_async(restore(settings, directory, force=force))
    print(orjson.dumps(report.json()).decode())
    for problem in report.problems:
        err(problem)
    if report.problems:
        raise typer.Exit(1)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="leave everything running (stop with `choreo down`)")] = False,
) -> None:
    """`make run`: up, several report goals (some failing), live progress, outcomes, down."""
    from ._demo import run_demo

    raise typer.Exit(run_demo(keep=keep))


@app.command("init")
def init_project(
    directory: Annotated[Path, typer.Argument(help="where to write it (made if missing)")] = Path(),
    workflow: Annotated[str, typer.Option(help="the workflow's name, also its package's")] = "hello",
) -> None:
    """A starter project: one workflow, two agents, schemas, choreo.toml, a test; `choreo up` runs it."""
    from ._init import init

    for path in init(directory, workflow):
        print(path)
    print(f"next: cd {directory} && choreo up && choreo publish {workflow} --data '{{\"name\": \"Ada\"}}' --wait 30")
