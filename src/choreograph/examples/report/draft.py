"""draft: writes the report text (runs in parallel with chart)."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import RETRY, AnalysisCompleted, DraftCompleted, step_timeout, undo, work

# Drafting calls a language model, which can hang: an attempt that takes over a minute is timed out
# (and retried, as a failed attempt is).
agent = Agent(workflow="report", step="draft", retry=RETRY, timeout=step_timeout(60))


@agent.handler
async def draft(ctx: StepContext, analysis: AnalysisCompleted) -> DraftCompleted:
    """Write the report's text from the findings."""
    await work(ctx, analysis.fail_at)
    text = f"# {analysis.topic}\n" + "\n".join(f"- {f}" for f in analysis.findings)
    return DraftCompleted(topic=analysis.topic, fail_at=analysis.fail_at, text=text)


@agent.compensation
async def discard_draft(ctx: StepContext, request: CompensationRequested) -> None:
    """Discard the draft."""
    await undo(ctx)
    ctx.log.info("draft: discarding draft of %s", ctx.workflow_id)
