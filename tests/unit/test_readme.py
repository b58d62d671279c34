"""README's test kit example is a test: its code block runs here, as a user would paste it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def _kit_example() -> str:
    section = README.read_text().split("## Testing your agents", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "README's 'Testing your agents' has one python example"
    return str(blocks[0])


async def test_the_readme_test_kit_example_passes() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_kit_example(), str(README), "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests, "the example defines a test"
    for test in tests:
        run: Callable[[], Awaitable[None]] = test
        await run()
