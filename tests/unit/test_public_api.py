"""The public surface beyond its pinned names (tests/unit/test_exports.py): the error tree, old module paths."""

import choreograph


def test_every_error_derives_from_choreograph_error() -> None:
    errors = [getattr(choreograph, n) for n in choreograph.__all__ if n.endswith(("Error", "Unavailable"))]
    assert all(issubclass(e, choreograph.ChoreographError) for e in errors)


def test_module_paths_from_before_the_packages_still_import() -> None:
    import importlib

    from choreograph._compat import MOVED  # the alias table itself is what is under test

    for old, new in MOVED.items():
        assert importlib.import_module(f"choreograph.{old}") is importlib.import_module(f"choreograph.{new}")
    settings_module = importlib.import_module("choreograph.settings")  # as `from choreograph.settings import` did
    assert settings_module.Settings is choreograph.Settings
    assert "tansu" in settings_module.PROFILES
