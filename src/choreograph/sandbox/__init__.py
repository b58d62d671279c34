"""Sandbox re-runs (`choreo replay`): recorded events fed to fresh copies of agents in a sandbox
namespace, and the re-run compared with the recording."""

from ._run import ReplayReport, rerun, rerun_steps

__all__ = ["ReplayReport", "rerun", "rerun_steps"]
