"""`choreo ui` (issue 14, part 6) in a real headless browser: Debian's Chromium driven by Playwright (its
own browser builds are never downloaded: `executable_path`). A stack of real processes (coordinator,
indexer, the example agents, review held on a gate) runs a completed and a compensated saga; the test
reads the workflows page, a workflow's step graph and timeline, the agents, dead-letter and steps pages, then
cancels a running saga from its page and sees it become cancelled. Screenshots go to test-output/ui/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import ROOT, Stack, agent_spec, eventually
from playwright.async_api import Browser, Page, async_playwright, expect

from choreograph import Client
from choreograph.runtime import discover
from choreograph.transport import Kafka
from choreograph.transport._dlq import DeadLetterBox

SHOTS = ROOT / "test-output" / "ui"
WAIT_MS = 60_000
# Every expectation waits up to this long: a page that reads the broker (a workflow's history, the
# agents' registry and lag) takes seconds on a busy 2-core machine, past Playwright's default 5 s.
expect.set_options(timeout=30_000)

# review holds a goal whose topic says "hold" until the test lets it go (a file appears), so that
# workflow is running, with research, analyze, chart and draft completed, when it is cancelled.
HELD_REVIEW = '''
import asyncio
from pathlib import Path

from choreograph import Agent, CompensationRequested, StepContext
from choreograph.examples.report._events import ChartCompleted, DraftCompleted, ReviewCompleted

GATE = Path({gate!r})
agent = Agent(workflow="report", step="review")


@agent.handler
async def review(ctx: StepContext, chart: ChartCompleted, draft: DraftCompleted) -> ReviewCompleted:
    if "hold" in draft.topic:
        GATE.with_suffix(".started").touch()
        while not GATE.exists():
            await asyncio.sleep(0.05)
    return ReviewCompleted(topic=draft.topic, approved=True, notes="reviewed")


@agent.compensation
async def withdraw(ctx: StepContext, request: CompensationRequested) -> None:
    ctx.log.info("review: withdrawing %s", ctx.workflow_id)
'''


def chromium_path() -> str:
    """Debian's Chromium; installed here when missing (as root, as on CI), else the test is skipped."""
    found = shutil.which("chromium")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600, check=True)
            subprocess.run(install, env=env, capture_output=True, timeout=900, check=True)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium: `apt-get install chromium` (needs root; .ci/run does it)")
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def ui_server(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`choreo ui` as a user runs it, its own process on a free port; its URL once it answers."""
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "choreograph", "ui", "--port", str(port)], cwd=ROOT,
                                   env=cli_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "static/ui.css", timeout=5) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"choreo ui did not answer in 30 s: {log.read_text()}"
                time.sleep(0.1)
        assert log.read_text().startswith(f"choreo ui: {url} "), log.read_text()
        yield url
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)  # stops by itself on SIGTERM, open event streams and all
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_the_web_view_shows_workflows_steps_agents_and_cancels_a_running_saga(
        stack: Stack, browser: Browser, ui_server: str, tmp_path: Path) -> None:
    gate = tmp_path / "review.go"
    (tmp_path / "held_review.py").write_text(HELD_REVIEW.format(gate=str(gate)))
    specs = [spec for spec in discover(ROOT) if spec.name != "report.review"]
    stack.start(*specs, agent_spec("report.review", "held_review:agent"), pythonpath=tmp_path)
    async with Client(stack.settings) as client:
        done = await client.publish("report", {"topic": "ui ok"})
        failed = await client.publish("report", {"topic": "ui fails", "fail_at": "draft"})
        assert (await client.wait(done, 90)).status.value == "completed"  # type: ignore[union-attr]
        assert (await client.wait(failed, 90)).status.value == "compensated"  # type: ignore[union-attr]
        # The same id again: the coordinator dead-letters the second goal (one dead letter to show).
        # Not client.wait: the id's first outcome may come first, and would answer for it.
        await client.publish("report", {"topic": "ui ok again"}, workflow_id=done.workflow_id)

    async def dead_lettered() -> bool:
        return bool(await DeadLetterBox(Kafka(stack.settings)).read(key=done.workflow_id.encode()))

    await eventually(dead_lettered, 90, "the duplicate goal dead-lettered")
    ok_id, failed_id = done.workflow_id, failed.workflow_id

    url = ui_server
    try:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})

        # Workflows: every one listed with its status (live: the indexer catches up while we look).
        await page.goto(url)
        await expect(page.locator("h1")).to_have_text("Workflows")
        for wid, status in ((ok_id, "completed"), (failed_id, "compensated")):
            await expect(page.locator(f'tr[data-workflow-id="{wid}"] .status')).to_have_text(status, timeout=WAIT_MS)
        await expect(page.locator('[data-count="compensated"]')).to_have_text("1")
        await expect(page.locator(f'tr[data-workflow-id="{failed_id}"]')).to_contain_text("draft failed")

        # A saga started while the page is open appears on it, live (no reload: the marker stays).
        await page.evaluate("window.notReloaded = true")
        async with Client(stack.settings) as client:
            held_id = (await client.publish("report", {"topic": "hold me"})).workflow_id

        async def review_runs() -> bool:
            return gate.with_suffix(".started").exists()

        await eventually(review_runs, 90, "review runs")
        await expect(page.locator(f'tr[data-workflow-id="{held_id}"] .status')).to_have_text("running",
                                                                                          timeout=WAIT_MS)
        await expect(page.locator('[data-count="running"]')).to_have_text("1")
        assert await page.evaluate("window.notReloaded") is True
        await shot(page, "workflows")

        # The compensated saga: its step graph's states, its timeline, its events and trace id.
        await page.click(f'a[href="/workflow/{failed_id}"]')
        node = page.locator("svg.dag g.node")
        await expect(node.filter(has_text="draft").first).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
        for step in ("research", "analyze"):
            await expect(page.locator(f'svg.dag g[data-step="{step}"]')).to_have_attribute("data-state",
                                                                                           "compensated")
        await expect(page.locator('svg.dag g[data-step="review"]')).to_have_attribute("data-state", "skipped")
        await expect(page.locator('svg.gantt g[data-step="research"][data-compensation="true"]')).to_have_count(1)
        await expect(page.locator("#facts .status")).to_have_text("compensated")
        trace = await page.locator("#trace").inner_text()
        assert len(trace) == 32, trace
        await expect(page.locator("table.events")).to_contain_text("step_failed")
        await expect(page.locator("#cancel")).to_have_count(0)
        await shot(page, "workflow-compensated")

        # Agents and dead letters.
        await page.click('nav a[href="/agents"]')
        await expect(page.locator("h2").first).to_have_text("report")
        for step in ("research", "analyze", "chart", "draft", "review"):
            row = page.locator(f'table.agents tr[data-step="{step}"]')
            await expect(row).to_have_count(1)
            await expect(row).not_to_contain_text("NO LIVE AGENT")
        # The graph the coordinator assembles from the contracts, every step served by a live agent.
        await expect(page.locator('section[data-workflow="report"] svg.dag g[data-state="live"]')).to_have_count(5)
        await expect(page.locator('table.agents tr[data-step="research"]')).to_contain_text("ResearchCompleted")
        await shot(page, "agents")
        await page.click('nav a[href="/dead-letters"]')
        await expect(page.locator("h1")).to_have_text("Dead letters")
        await expect(page.locator("main")).to_contain_text("choreo dlq redrive")
        letter = page.locator("table.letters tbody tr").filter(has_text=ok_id)
        await expect(letter).to_have_count(1)
        await expect(letter).to_contain_text(f"{stack.settings.events_topic}:")  # its origin's coordinates
        await shot(page, "dead-letters")
        await letter.locator("a").click()
        await expect(page.locator("#facts .status")).to_have_text("completed")
        await expect(page.locator("table.letters tbody tr")).to_have_count(1)  # the workflow's own dead letter

        # Steps: each step's runs, failures and p50/p95 (the 1h window, so a slow machine's minutes don't drop them).
        await page.click('nav a[href="/steps"]')
        await expect(page.locator("h1")).to_have_text("Steps")
        await page.click('.windows a:text-is("1h")')
        steps = page.locator('table.steps tr[data-workflow="report"]')
        await expect(steps.and_(page.locator('[data-step="research"][data-compensation="0"]'))).to_have_count(1)
        await expect(steps.and_(page.locator('[data-step="draft"][data-compensation="0"]'))).to_have_class("failing")
        await expect(steps.and_(page.locator('[data-step="research"][data-compensation="1"]'))).to_contain_text(
            "↺research")
        await shot(page, "steps")

        # The held saga: running, review running; cancel it from its page and watch it end cancelled.
        await page.goto(f"{url}workflow/{held_id}")
        await expect(page.locator('svg.dag g[data-step="review"]')).to_have_attribute("data-state", "running",
                                                                                      timeout=WAIT_MS)
        await page.fill('form.cancel input[name="reason"]', "enough from the browser")
        await page.click("#cancel")
        await expect(page.locator("#notice")).to_contain_text("Cancellation requested", timeout=WAIT_MS)
        await expect(page.locator("#facts .status")).to_have_text("cancelled", timeout=WAIT_MS)
        await expect(page.locator('svg.dag g[data-step="research"]')).to_have_attribute("data-state", "compensated",
                                                                                        timeout=WAIT_MS)
        await expect(page.locator("table.events")).to_contain_text("enough from the browser")
        await shot(page, "workflow-cancelled")
        await page.close()
    finally:
        gate.touch()
