"""research: the entry step of `report`; collects sources for the goal's topic."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import RETRY, ReportGoal, ResearchCompleted, undo, work

agent = Agent(workflow="report", step="research", retry=RETRY)


@agent.handler
async def research(ctx: StepContext, goal: ReportGoal) -> ResearchCompleted:
    """Gather sources on the goal's topic."""
    await work(ctx, goal.fail_at)
    sources = [f"https://example.org/{goal.topic.replace(' ', '-')}/{i}" for i in range(3)]
    return ResearchCompleted(topic=goal.topic, fail_at=goal.fail_at, sources=sources)


@agent.compensation
async def discard_sources(ctx: StepContext, request: CompensationRequested) -> None:
    """Discard the gathered sources."""
    await undo(ctx)
    ctx.log.info("research: discarding sources of %s (%s failed)", ctx.workflow_id, request.failed_step)
