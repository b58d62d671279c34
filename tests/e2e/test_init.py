"""`choreo init` writes a starter project that runs at once: `choreo up` there, a goal completes, its test passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from helpers import choreo


def test_a_starter_project_runs_its_workflow_and_its_test(cli_env: dict[str, str], tmp_path: Path) -> None:
    written = choreo("init", str(tmp_path / "shop"), "--workflow", "orders", env=cli_env, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    project = tmp_path / "shop"
    assert (project / "choreo.toml").is_file()
    assert (project / "schemas" / "orders" / "goal.avsc").is_file()

    again = choreo("init", str(project), "--workflow", "orders", env=cli_env, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.startswith("error: ")
    assert "exists already; nothing written" in again.stderr

    up = choreo("up", env=cli_env, cwd=project)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.split()[::3] == ["coordinator", "index", "orders.greet", "orders.reply"], up.stdout
        done = choreo("publish", "orders", "--data", '{"name": "Ada"}', "--wait", "60", env=cli_env, cwd=project)
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["status"] == "completed"
    finally:
        assert choreo("down", env=cli_env, cwd=project).returncode == 0

    tested = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "ignore"],
                            cwd=project, env=cli_env, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    assert "1 passed" in tested.stdout
