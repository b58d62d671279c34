"""Example workflows that ship with the library: `report` (see `choreo demo`).

Nothing here runs unless asked: `choreo demo` starts the example agents by name, and this
repository's `[tool.choreograph]` names them for `choreo up`. They are not entry points, so a
user's `choreo up` never starts them by surprise.
"""

__all__: list[str] = []
