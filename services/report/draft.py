"""draft: writes the report text (runs in parallel with chart)."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import AnalysisCompleted, DraftCompleted, work

agent = Agent(workflow="report", step="draft")


@agent.handler
async def draft(ctx: StepContext, analysis: AnalysisCompleted) -> DraftCompleted:
    await work(ctx, analysis.fail_at)
    text = f"# {analysis.topic}\n" + "\n".join(f"- {f}" for f in analysis.findings)
    return DraftCompleted(topic=analysis.topic, fail_at=analysis.fail_at, text=text)


@agent.compensation
async def discard_draft(ctx: StepContext, request: CompensationRequested) -> None:
    ctx.log.info("draft: discarding draft of %s", ctx.workflow_id)
