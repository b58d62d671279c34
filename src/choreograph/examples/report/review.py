"""review: joins chart and draft (it waits for both) and approves the report."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import RETRY, ChartCompleted, DraftCompleted, ReviewCompleted, undo, work

agent = Agent(workflow="report", step="review", retry=RETRY)


@agent.handler
async def review(ctx: StepContext, chart: ChartCompleted, draft: DraftCompleted) -> ReviewCompleted:
    """Review the chart and the draft together (a join: waits for both)."""
    await work(ctx, draft.fail_at)
    return ReviewCompleted(topic=draft.topic, approved=True, notes=f"{len(draft.text)} chars, {chart.chart_uri}")


@agent.compensation
async def withdraw_approval(ctx: StepContext, request: CompensationRequested) -> None:
    """Withdraw the approval."""
    await undo(ctx)
    ctx.log.info("review: withdrawing approval of %s", ctx.workflow_id)
