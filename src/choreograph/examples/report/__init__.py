"""The example `report` workflow: research, analyze, then chart and draft in parallel, then review.

`AGENTS` names its agents as `choreo agent run` takes them; `choreo demo` starts exactly these.
"""

STEPS = ("research", "analyze", "chart", "draft", "review")
AGENTS = tuple(f"choreograph.examples.report.{step}:agent" for step in STEPS)
