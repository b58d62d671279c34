"""The test tree's own rule: a test file's name is unique across the layers' folders. The folders are
not packages (pytest's default import mode), so two files of one name cannot both be collected in a
session: pytest stops with "import file mismatch", depending on which worker met which first."""

from __future__ import annotations

from collections import Counter

from helpers import ROOT


def test_every_test_file_name_is_unique() -> None:
    names = Counter(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
