"""analyze: turns research sources into findings."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import RETRY, AnalysisCompleted, ResearchCompleted, undo, work

agent = Agent(workflow="report", step="analyze", retry=RETRY)


@agent.handler
async def analyze(ctx: StepContext, research: ResearchCompleted) -> AnalysisCompleted:
    """Turn the sources into findings."""
    await work(ctx, research.fail_at)
    findings = [f"finding from {source}" for source in research.sources]
    return AnalysisCompleted(topic=research.topic, fail_at=research.fail_at, findings=findings)


@agent.compensation
async def retract_findings(ctx: StepContext, request: CompensationRequested) -> None:
    """Retract the findings."""
    await undo(ctx)
    ctx.log.info("analyze: retracting findings of %s", ctx.workflow_id)
