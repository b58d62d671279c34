"""`choreo ui`: a live web view of workflows, their steps, step statistics, agents and dead letters (the `ui` extra).

Server-rendered pages (Starlette, served by uvicorn) with a small script of our own for live updates
(server-sent events); the stylesheet and script ship in the package, so the view works offline.
"""

from ._app import make_app
from ._data import Agents, Filters, Overview, Source, StepsView, WorkflowView, fold_entries
from ._html import Markup, escape, render
from ._server import serve

__all__ = [
    "Agents",
    "Filters",
    "Markup",
    "Overview",
    "Source",
    "StepsView",
    "WorkflowView",
    "escape",
    "fold_entries",
    "make_app",
    "render",
    "serve",
]
