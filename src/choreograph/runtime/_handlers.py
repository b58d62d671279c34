"""Running attempts: each handler run in a task of its own, at most so many at once, as breaker and rate limit admit.

A run is an `asyncio.create_task` (with its own copy of the context): cancellation scopes,
`asyncio.timeout`, TaskGroup, `current_task()` and context variables are the handler's, as in plain
asyncio, and nothing a handler does can cancel or change the consumer loop. (Until issue 11 the
first steps of a handler ran inside the loop's task: a handler's `asyncio.timeout` cancelled the
loop and the agent exited.)

An attempt that raises is retried per the agent's `retry`: a StepAttemptFailed is published and the
next attempt waits for its time (see _attempts); the last failure, or a `NonRetryable`, publishes
StepFailed (CompensationFailed for an undo).

Each start takes a token of the agent's rate limit, if it has one (see _ratelimit): the attempt at
the head of the queue waits for its token on a clock timer, and while it waits the consumer loop is
not held (`throttled`): it finishes its batch, and Health pauses consumption.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import AgentDefinitionError, NonRetryable
from ..events._envelope import Kind
from ..events._faults import BreakerState, StepAttemptFailed, StepHeartbeat
from ..events._models import CompensationCompleted, CompensationFailed, CompensationRequested, Event, StepFailed
from ..telemetry._metrics import AgentMetrics, error_type
from ..telemetry._tracing import ATTEMPT, Tracing
from ..transport._clock import Clock
from ..transport._logs import ContextFilter, LogContext, enter, leave
from ._agent import Agent, StepContext
from ._attempts import Attempt, State
from ._breaker import CircuitBreaker
from ._guards import screen
from ._ratelimit import TokenBucket
from ._results import Results

log = logging.getLogger("choreograph.agent")
# ctx.log's lines name their workflow wherever they go (a service's handler has the filter too;
# pytest's caplog, under the test kit, has not).
log.addFilter(ContextFilter())


class Runner:
    """Starts attempts and turns each run's end into its record in the log.

    Args:
        agent: The agent.
        results: Where records are published.
        clock: The time of retries, heartbeats and the breaker.
        max_concurrency: Handler runs at once.
        breaker: The breaker's state machine, if the agent declares one.
        on_breaker: Called with the cause when the breaker changes state.
        metrics: Where each run's duration is recorded; None when metrics are off.
        tracing: Spans of each run (a CONSUMER span per attempt), or None when tracing is off.
        topic: The events topic; group: the agent's consumer group (the spans' attributes).

    Attributes:
        tasks: Every task of the agent (runs, retry timers, background sends): a crash cancels them.
        runs: The handler runs in progress (each holds a slot).
        queue: Attempts waiting for a slot (or for the breaker, or for a token).
        fatal: A run's error that is not the handler's (a result that could not be published).
        limiter: The agent's rate limit's bucket, if it declares one.
        throttled: The attempt at the head of the queue waits for a token now.
        was_throttled: One did at some moment since the last presence record (see Health.snapshot).
    """

    def __init__(self, agent: Agent, results: Results, clock: Clock, *, max_concurrency: int,
                 breaker: CircuitBreaker | None, on_breaker: Callable[[str], None],
                 metrics: AgentMetrics | None = None, tracing: Tracing | None = None, topic: str = "",
                 group: str = "") -> None:
        self._agent = agent
        self._metrics = metrics
        self._results = results
        self._clock = clock
        self._max = max_concurrency
        self.breaker = breaker
        self._on_breaker = on_breaker
        self._arg_types = [t.type_name().encode() for t in agent.consumes]
        self._policy = agent.retry.policy() if agent.retry is not None else None
        self._final: tuple[type[BaseException], ...] = (
            NonRetryable, *(agent.retry.non_retryable if agent.retry is not None else ()))
        timeout = agent.heartbeat_timeout_ms
        self._beat_every = timeout // 3 if timeout else 1000
        self.tasks: set[asyncio.Task[None]] = set()
        self.runs: set[asyncio.Task[None]] = set()
        self.queue: deque[Attempt] = deque()
        self._room = asyncio.Event()
        self.fatal: BaseException | None = None
        self.limiter = TokenBucket(agent.rate_limit) if agent.rate_limit is not None else None
        self.throttled = self.was_throttled = False
        self._token_timer: asyncio.Task[None] | None = None
        self._tracing = tracing
        self._topic, self._group = topic, group

    # admission ---------------------------------------------------------------------------------------

    def admit(self, attempt: Attempt) -> None:
        """Start `attempt` now if a slot is free and the breaker and the rate limit let it, else queue it."""
        attempt.state = State.QUEUED
        if not self.queue and self.breaker is None and self.limiter is None and len(self.runs) < self._max:
            self._spawn(attempt)
            return
        self.queue.append(attempt)
        self.pump()

    def pump(self) -> None:
        """Start queued attempts while slots are free, the breaker admits them and tokens are there."""
        queue, breaker, limiter = self.queue, self.breaker, self.limiter
        self.throttled = False
        while queue and len(self.runs) < self._max:
            attempt = queue[0]
            if attempt.state is not State.QUEUED:
                queue.popleft()  # timed out or forgotten while it waited
                continue
            # The token is looked at before the breaker is asked: a half-open breaker's probe is
            # spent by admit(), and must not be spent on an attempt that then waits for a token.
            if limiter is not None and (due := limiter.due(now := self._clock.now_ms())) > now:
                self._wait_for_token(due)
                break
            probe = breaker is not None and breaker.state is BreakerState.HALF_OPEN
            if breaker is not None and not breaker.admit():
                break
            queue.popleft()
            attempt.probe = probe
            if limiter is not None:
                limiter.take(now)
            self._spawn(attempt)
        if not queue or self.throttled or (breaker is not None and breaker.state is not BreakerState.CLOSED):
            self._room.set()

    def _wait_for_token(self, due: int) -> None:
        """The head of the queue waits for a token: pump again when it is due (one timer at a time)."""
        self.throttled = self.was_throttled = True
        if self._token_timer is None:
            self._token_timer = self.background(self._token_due(due), "rate limit timer")

    async def _token_due(self, due: int) -> None:
        await self._clock.sleep_until(due)
        self._token_timer = None
        self.pump()

    def saturated(self) -> bool:
        """Whether consumption should pause: more attempts wait for tokens than the bucket's reserve."""
        return self.throttled and self.limiter is not None and len(self.queue) > self.limiter.reserve

    def congested(self) -> bool:
        """Whether the consumer loop should wait: attempts are queued for slots (not for the breaker or a token)."""
        return bool(self.queue) and not self.throttled and (
            self.breaker is None or self.breaker.state is BreakerState.CLOSED)

    async def wait_for_room(self) -> None:
        """Return once nothing is queued for a slot (back-pressure on the consumer loop)."""
        while self.congested():
            self._room.clear()
            await self._room.wait()

    def _spawn(self, attempt: Attempt) -> None:
        # A task of its own, with a copy of the context. It stays QUEUED until it starts: an attempt
        # dropped before that (timed out, forgotten) never runs its handler.
        task = asyncio.create_task(self._run(attempt))
        attempt.task = task
        self.runs.add(task)
        self.tasks.add(task)

    def background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work` in a task the agent holds (cancelled on stop or crash); its error is only logged."""
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("%s: %s failed: %r", self._agent.name, task.get_name(), error)

    # the breaker -------------------------------------------------------------------------------------

    def record(self, attempt: Attempt, *, failed: bool) -> None:
        """Count an attempt's outcome on the breaker (if any)."""
        if self.breaker is not None and (
                cause := self.breaker.record(failed, self._clock.now_ms(), probe=attempt.probe)) is not None:
            self._on_breaker(cause)
            self.pump()

    # one run -----------------------------------------------------------------------------------------

    async def _run(self, attempt: Attempt) -> None:
        """One attempt's task; it gives its slot back itself (a done callback costs ~1.3 us a run).

        Every line logged during the run names its workflow, step and cause (the log context, set
        once in this task's own copy of the context: it cannot reach the consumer loop).
        """
        context = enter(LogContext(self._agent.name, attempt.cause, self._agent.step))
        span = token = None
        try:
            if attempt.state is State.QUEUED:  # else dropped before it started
                attempt.state = State.RUNNING
                if self._tracing is not None:
                    # Current in this task's own context only: the consumer loop never sees it.
                    span = self._span(self._tracing, attempt)
                    token = self._tracing.attach(span)
                if (metrics := self._metrics) is None:
                    await self._attempt(attempt)
                else:
                    started = time.perf_counter()
                    error = await self._attempt(attempt)
                    metrics.processed(time.perf_counter() - started, attempt.compensation, error)
            elif attempt.probe and self.breaker is not None:
                self.breaker.give_back()  # its outcome will never answer the half-open breaker
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the handler's errors are its attempt's record: this is a publish failure
            self.fatal = self.fatal or exc
        finally:
            # Before pump: a task created here copies this context, and the next attempt is not this one.
            if span is not None and self._tracing is not None:
                self._tracing.detach(token)
                span.end()
            leave(context)
            self.runs.discard(attempt.task)  # set before the task's first step
            self.tasks.discard(attempt.task)
            if self.queue:
                self.pump()

    def _span(self, tracing: Tracing, attempt: Attempt) -> Any:
        """The run's CONSUMER span: child of its cause's context, linked to every input's (a join)."""
        cause, inputs = attempt.cause, attempt.inputs.values()
        offset = next((item.offset for item in inputs if item.envelope is cause), None)
        links = tracing.links(i.envelope.traceparent for i in inputs) if len(inputs) > 1 else None
        name = f"{'compensate' if attempt.compensation else 'process'} {self._agent.step}"
        span = tracing.received(name, cause, self._topic, attempt.partition, offset, self._group, links)
        span.set_attribute(ATTEMPT, attempt.number)
        return span

    async def _attempt(self, attempt: Attempt) -> str | None:
        """Run the handler and publish its record; returns the run's error.type if it failed."""
        agent = self._agent
        ctx = StepContext(agent.workflow, attempt.workflow_id, agent.step, attempt.cause, log,
                          attempt=attempt.number, beat=functools.partial(self._beat, attempt))
        result: Event
        try:
            if attempt.compensation:
                request = next(iter(attempt.inputs.values())).event
                if agent.compensation_fn is None or not isinstance(request, CompensationRequested):
                    raise AgentDefinitionError(f"{agent.name}: compensation run without a compensation handler")
                await agent.compensation_fn(ctx, request)
                result, kind = CompensationCompleted(step=agent.step), Kind.COMPENSATION_COMPLETED
            else:
                if agent.handler_fn is None:  # checked by the runtime; kept for the type checker
                    raise AgentDefinitionError(f"{agent.name}: no @agent.handler")
                inputs = attempt.inputs
                result = await agent.handler_fn(ctx, *[inputs[t].event for t in self._arg_types])
                if agent.completes_with is not None and not isinstance(result, agent.completes_with):
                    raise TypeError(f"handler returned {type(result).__name__}, "
                                    f"declared {agent.completes_with.__name__}")
                # In the run's task: a slow guard holds a slot, not the consumer loop.
                if agent.guards and (rejected := await screen(agent.guards, result)) is not None:
                    ctx.emitted.clear()  # a rejected attempt publishes nothing of its own but its failure
                    raise rejected
                kind = Kind.STEP_COMPLETED
        except asyncio.CancelledError:
            attempt.state = State.FINISHED
            if attempt.timed_out:
                if self._tracing is not None:
                    self._tracing.current_failed("StepTimedOut")
                return "StepTimedOut"  # cancelled for its StepTimedOut, which is the attempt's record
            raise
        except Exception as exc:
            attempt.state = State.FINISHED
            if not attempt.timed_out:  # else its StepTimedOut is its record already
                await self._failed(ctx, attempt, exc)
            return error_type(exc)
        attempt.state = State.FINISHED
        # A timed-out attempt whose handler returned anyway still publishes: the coordinator
        # compensates a late result.
        if not attempt.timed_out:
            self.record(attempt, failed=False)
        await self._results.publish(ctx, result, kind, attempt.key, attempt.partition, attempt.take_pins())
        return None

    async def _failed(self, ctx: StepContext, attempt: Attempt, exc: Exception) -> None:
        """Publish a failed attempt: StepAttemptFailed with the next one's due time, or the final failure."""
        agent, policy = self._agent, self._policy
        final = isinstance(exc, self._final)
        if self._tracing is not None:
            self._tracing.current_failed(exc)
        reason = str(exc) or repr(exc)
        cause = exc.__cause__ if isinstance(exc, NonRetryable) else None
        error_type = type(cause or exc).__name__
        due = None if final or policy is None else policy.next_attempt_at(
            attempt.workflow_id, agent.step, attempt.number, self._clock.now_ms())
        if not final:
            self.record(attempt, failed=True)
        elif attempt.probe:
            # A business refusal says nothing against the dependency's health, but a probe must be
            # answered: it came back, so the dependency answers (unrecorded, the breaker stayed
            # half-open with no probe left and the agent never started another attempt).
            self.record(attempt, failed=False)
        what = "compensation" if attempt.compensation else "attempt"
        if due is not None:
            log.info("%s: %s %d of %s failed, next at %d: %r", agent.name, what, attempt.number,
                     attempt.workflow_id, due, exc)
            ctx.emitted.clear()  # the next attempt emits its own
            failed = StepAttemptFailed(step=agent.step, attempt=attempt.number, compensation=attempt.compensation,
                                       reason=reason, error_type=error_type, next_attempt_at=due,
                                       input_offsets=attempt.offsets())
            await self._results.publish(ctx, failed, Kind.STEP_ATTEMPT_FAILED, attempt.key, attempt.partition,
                                        attempt.take_pins(), attempt.following(due))
            return
        log.log(logging.WARNING if attempt.compensation else logging.INFO, "%s: %s %d of %s failed: %r",
                agent.name, what, attempt.number, attempt.workflow_id, exc)
        result: Event
        if attempt.compensation:
            result, kind = CompensationFailed(step=agent.step, reason=reason, error_type=error_type), \
                Kind.COMPENSATION_FAILED
        else:
            result, kind = StepFailed(step=agent.step, reason=reason, error_type=error_type,
                                      attempts=attempt.number), Kind.STEP_FAILED
        await self._results.publish(ctx, result, kind, attempt.key, attempt.partition, attempt.take_pins())

    def _beat(self, attempt: Attempt, details: str | None) -> None:
        """StepContext.heartbeat: a StepHeartbeat sent in the background, at most one per interval."""
        now = self._clock.now_ms()
        if attempt.state is not State.RUNNING or attempt.timed_out or (
                attempt.last_beat is not None and now - attempt.last_beat < self._beat_every):
            return
        attempt.last_beat = now
        agent = self._agent
        ctx = StepContext(agent.workflow, attempt.workflow_id, agent.step, attempt.cause, log, attempt=attempt.number)
        beat = StepHeartbeat(step=agent.step, attempt=attempt.number, details=details)
        self.background(self._results.note(ctx, beat, Kind.HEARTBEAT, attempt.partition), "heartbeat")
