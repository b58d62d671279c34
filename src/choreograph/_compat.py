"""Old module paths keep working: `import choreograph.settings` is `choreograph.transport._settings`.

Before the packages by role, choreograph was one flat folder of modules, and code outside it imported
some of them by path (`from choreograph.settings import PROFILES`). Each old path is an alias of the
module that holds the same names now; new code imports from the package faces instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

MOVED = {
    "agent": "runtime._agent", "archive": "timetravel._archive", "archiver": "timetravel._archiver",
    "broker": "transport._broker", "client": "runtime._client", "coordinator": "runtime._coordinator",
    "demo": "cli._demo", "envelope": "events._envelope", "graph": "saga._graph",
    "history": "timetravel._history", "process": "runtime._service", "recording": "timetravel._recording",
    "replay": "saga._replay", "settings": "transport._settings", "supervisor": "runtime._processes",
    "timeline": "cli._render",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `choreograph.<old>` and loads it as the module it moved to."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path, None for anything else."""
        package, _, name = fullname.partition(".")
        if package != "choreograph" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The moved module itself (so both paths name one module object)."""
        return importlib.import_module(f"choreograph.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the moved module is already loaded."""


def install() -> None:
    """Make the old module paths importable (once)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
