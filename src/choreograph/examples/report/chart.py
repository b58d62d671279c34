"""chart: renders the findings (runs in parallel with draft)."""

from choreograph import Agent, CompensationRequested, StepContext

from ._events import RETRY, AnalysisCompleted, ChartCompleted, undo, work

agent = Agent(workflow="report", step="chart", retry=RETRY)


@agent.handler
async def chart(ctx: StepContext, analysis: AnalysisCompleted) -> ChartCompleted:
    """Render the findings as a chart."""
    await work(ctx, analysis.fail_at)
    return ChartCompleted(topic=analysis.topic, fail_at=analysis.fail_at,
                          chart_uri=f"charts/{ctx.workflow_id}.svg")


@agent.compensation
async def delete_chart(ctx: StepContext, request: CompensationRequested) -> None:
    """Delete the chart."""
    await undo(ctx)
    ctx.log.info("chart: deleting charts/%s.svg", ctx.workflow_id)
