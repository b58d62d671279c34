"""`choreo agents`: each announced step and who serves it now; `choreo agents retire`: remove a step.

What a step's row says comes from three places: its contract on the registry (agent, retry and
timeout policy), the status topic (live instances, last seen, breaker, rate limit; see transport._presence),
and its consumer group (committed lag, and membership where the broker describes groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import WorkflowError
from ..events._models import StepContract
from ..security._verify import Verifier
from ..transport._clock import SYSTEM_CLOCK, Clock
from ..transport._groups import group_lags, group_members
from ..transport._kafka import Kafka
from ..transport._keyring import operator_identity, service_verifier
from ..transport._port import Transport
from ..transport._presence import Status, read_status, serving
from ..transport._registry import Registry, retire
from ..transport._settings import Settings
from ..transport._trust import Trust

RETIRE_SOURCE = "choreo://cli/retire"


async def _contracts(transport: Transport, verifier: Verifier | None) -> Registry:
    """A registry reader caught up to the registry's end (stopped again), believing what `verifier` admits."""
    return await Registry.read(transport, verifier=verifier)


def _order(registry: Registry, workflow: str) -> list[str]:
    """The workflow's steps in graph order (by name when its contracts make no graph)."""
    graph = registry.catalog.get(workflow)
    named = sorted(n.split("/", 1)[1] for n in [*registry.contracts, *registry.refused]
                   if n.split("/", 1)[0] == workflow)
    return list(graph.order) if graph is not None and graph.refused is None else named


async def agents_report(settings: Settings, *, workflow: str | None = None, transport: Transport | None = None,
                        clock: Clock = SYSTEM_CLOCK, verifier: Verifier | None = None) -> list[dict[str, Any]]:
    """One row per announced step (of `workflow`, or of all): its agent, who serves it, its policy.

    A row's `rate_limit` is the latest live instance's ({"per_second", "burst"}, per instance), and
    `throttled` says whether any live instance waited for a token in its last presence interval.

    A row's `no_live_agent` is set when no instance is live: none sent a fresh presence and (where
    the broker says) its consumer group has no member. `live_by` says which of the two counted.
    `live` and `no_live_agent` are None when nobody can tell: no agent instance of any step sends
    presence, and the broker's group membership is not trusted (see transport.group_members).

    Args:
        settings: The broker and namespace.
        workflow: Only this workflow's steps.
        transport: The broker port; Kafka unless given.
        clock: Now, for liveness.
        verifier: Which contracts to believe; the environment's (transport.service_verifier) when None.

    Returns:
        The rows, by workflow and in graph order.
    """
    kafka = transport if transport is not None else Kafka(settings)
    registry = await _contracts(kafka, verifier or service_verifier())
    status = await read_status(kafka, clock=clock)
    now = clock.now_ms()
    workflows = sorted({n.split("/", 1)[0] for n in [*registry.contracts, *registry.refused]})
    steps = [(w, s) for w in workflows if workflow in (None, w) for s in _order(registry, w)]
    groups = [settings.agent_group(w, s) for w, s in steps]
    lags = await group_lags(kafka, groups, settings.events_topic) if groups else {}
    members = await group_members(kafka, groups)
    return [_row(registry, status, w, s, now, lags.get(g), members.get(g), g) for (w, s), g in zip(steps, groups,
                                                                                                   strict=True)]


def _row(registry: Registry, status: Status, workflow: str, step: str, now: int, lag: int | None,
         members: int | None, group: str) -> dict[str, Any]:
    name = f"{workflow}/{step}"
    contract = registry.contracts.get(name)
    instances = status.of(workflow, step)
    live = [i for i in instances if i.live(now)]
    count, by = serving(status, workflow, step, now, members)
    breakers = [i.breaker for i in live] or ([status.breakers[(workflow, step)][0]]
                                             if (workflow, step) in status.breakers else [])
    breaker = next((state for state in ("open", "half_open", "closed") if state in breakers), None)
    policy = None if contract is None or contract.retry is None else contract.retry.model_dump()
    limited = [i.presence for i in live if i.presence.rate_limit is not None]
    return {
        "workflow": workflow, "step": step, "agent": None if contract is None else contract.agent, "group": group,
        "live": count, "live_by": by, "no_live_agent": None if count is None else count == 0, "members": members,
        "instances": [i.json(now) for i in instances],
        "last_seen": instances[0].presence.seen_at if instances else None,
        "last_seen_ago_s": round((now - instances[0].presence.seen_at) / 1000, 1) if instances else None,
        "lag": lag, "breaker": breaker,
        "breaker_cause": next((i.breaker_cause for i in live if i.breaker == breaker and i.breaker_cause), None),
        "rate_limit": {"per_second": limited[0].rate_limit, "burst": limited[0].rate_burst} if limited else None,
        "throttled": any(p.throttled for p in limited) if limited else None,
        "retry": policy, "timeout_ms": None if contract is None else contract.timeout_ms,
        "heartbeat_timeout_ms": None if contract is None else contract.heartbeat_timeout_ms,
        "compensable": None if contract is None else contract.compensable,
        "refused": registry.refused.get(name),
    }


def _dependents(contracts: Sequence[StepContract], gone: StepContract) -> list[str]:
    """Steps of its workflow that consume what `gone` completes with and no other step does."""
    mine = [c for c in contracts if c.workflow == gone.workflow and c.step != gone.step]
    produced = gone.completes_with.name
    if any(c.completes_with.name == produced for c in mine):
        return []
    return sorted(c.step for c in mine if any(t.name == produced for t in c.consumes))


async def retire_step(settings: Settings, workflow: str, step: str, *, force: bool = False,
                      transport: Transport | None = None, clock: Clock = SYSTEM_CLOCK,
                      trust: Trust | None = None) -> dict[str, Any]:
    """Remove a step's contract so new goals of its workflow run without it (see transport.retire).

    Refused (unless `force`) while the step has live instances (they would keep serving it, and
    announce it again when they restart), or when another step consumes what only it completes with
    (their sagas would wait for an input nobody produces).

    Args:
        settings: The broker and namespace.
        workflow: The step's workflow.
        step: The step.
        force: Retire it anyway.
        transport: The broker port; Kafka unless given.
        clock: Now, for liveness.
        trust: The operator's signer (see transport.Trust): the tombstones are believed only when
            an operator signed them. None: the environment's `operator:<CHOREO_OPERATOR>`.

    Returns:
        What was retired: "workflow", "step", "steps_left" (the workflow's steps now).

    Raises:
        WorkflowError: No such step is announced, or it may not be retired (see above).
    """
    kafka = transport if transport is not None else Kafka(settings)
    if trust is None:
        trust = Trust.from_env(operator_identity())
    registry = await _contracts(kafka, trust.verifier)
    name = f"{workflow}/{step}"
    contract = registry.contracts.get(name)
    if contract is None and name not in registry.refused:
        known = sorted(n.split("/", 1)[1] for n in [*registry.contracts, *registry.refused]
                       if n.split("/", 1)[0] == workflow)
        where = f"announced steps of {workflow!r}: {', '.join(known)}" if known else \
            f"no step of workflow {workflow!r} is announced"
        raise WorkflowError(f"no step {step!r} of workflow {workflow!r} is announced ({where})")
    if not force:
        if contract is not None and (waiting := _dependents(list(registry.contracts.values()), contract)):
            raise WorkflowError(
                f"step {step!r} of {workflow!r} is the only one completing with {contract.completes_with.name}, "
                f"which {', '.join(waiting)} consume{'s' if len(waiting) == 1 else ''}: their sagas would wait "
                f"for it forever; retire {', '.join(waiting)} first, or pass --force")
        status = await read_status(kafka, clock=clock)
        live = status.live(workflow, step, clock.now_ms())
        members = (await group_members(kafka, [settings.agent_group(workflow, step)])).popitem()[1]
        if live or members:
            who = ", ".join(f"{p.instance} (pid {p.pid} on {p.host})" for p in live) or \
                f"{members} member(s) of group {settings.agent_group(workflow, step)}"
            raise WorkflowError(f"step {step!r} of {workflow!r} is served now by {who}: stop its agents first "
                                "(a running agent announces its step again when it restarts), or pass --force")
    producer = trust.producer(kafka.producer())
    await producer.start()
    try:
        partitions = await kafka.partition_count(settings.events_topic)
        await retire(producer, settings.registry_topic, settings.events_topic, partitions, workflow, step,
                     RETIRE_SOURCE)
    finally:
        await producer.stop()
    left = [s for s in _order(registry, workflow) if s != step]
    return {"workflow": workflow, "step": step, "retired": True, "steps_left": left}
