"""Sandbox re-runs (`choreo replay`): fresh copies of agents re-run a recorded workflow, then compared.

The recorded events are fed to the re-run agents in a sandbox namespace, and the re-run's events are
compared with the recorded ones.
"""

from ._compare import ReplayReport
from ._run import rerun, rerun_steps

__all__ = ["ReplayReport", "rerun", "rerun_steps"]
