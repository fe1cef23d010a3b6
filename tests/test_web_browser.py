"""The dashboard in a real browser (Playwright driving Debian's /usr/bin/chromium; no
browser is ever downloaded): a real sqlite queue, a real worker, and what a person sees.
Without chromium or playwright the tests skip saying so, and fail in CI (CI=true). A
failing test leaves a screenshot of the page in $SHOAL_TEST_ARTEFACTS (default: its
temporary folder)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_web import Dashboard, shoal

CHROMIUM = "/usr/bin/chromium"
PATIENCE_MS = 60_000  # a loaded 2-core machine: generous, never a sleep
FLAGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium for one test (the driver is a child process: none may outlive a test)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; no browser download "
                 "is needed)")
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=FLAGS)
        except Error as exc:  # e.g. the kernel refuses the browser's namespaces
            _missing(f"chromium did not start: {str(exc).splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    script_errors: list[str] = []
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    failed_before = request.session.testsfailed
    yield opened
    if request.session.testsfailed > failed_before:  # this test's call just failed
        shot = Path(os.environ.get("SHOAL_TEST_ARTEFACTS", tmp_path)) / \
            f"{request.node.name}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the page as the test failed: {shot}")
    context.close()
    assert not script_errors, f"the page's script failed: {script_errors}"


def gated_sweep(tmp_path: Path) -> str:
    """Four jobs that wait for the file GO; job 3 fails until the file OK exists."""
    url = f"sqlite://{tmp_path / 'q.db'}"
    go, ok = tmp_path / "GO", tmp_path / "OK"
    body = (f"while [ ! -e {go} ]; do sleep 0.05; done; echo log-of-{{}}; "
            f"test {{}} -ne 3 || test -e {ok} || exit 7")
    done = shoal("submit", url, body, ":::", "1", "2", "3", "4")
    assert done.returncode == 0, done.stderr
    return url


def text_of(page: Any, selector: str, expected: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(expected, timeout=PATIENCE_MS)


def test_a_person_watches_the_sweep_finds_the_failure_and_retries_it(procs, page, tmp_path):
    from playwright.sync_api import expect

    url = gated_sweep(tmp_path)
    web = Dashboard(procs, url)
    worker = procs.shoal("work", url, "--slots", "2", apart=True)
    page.goto(web.url)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    assert "token" not in page.url  # the cookie holds it now
    text_of(page, "#workers-alive", "1")
    text_of(page, "#count-running", "2")  # the worker holds two, gated on GO
    text_of(page, "#count-pending", "2")
    text_of(page, "#count-done", "0")
    (tmp_path / "GO").touch()
    text_of(page, "#count-done", "3")
    text_of(page, "#count-failed", "1")
    text_of(page, "#count-running", "0")
    assert page.evaluate("window.__sameDocument") is True  # live updates, no reload

    page.select_option("#state-filter", "failed")
    rows = page.locator("#job-rows tr")
    expect(rows).to_have_count(1, timeout=PATIENCE_MS)
    rows.first.click()
    expect(page.locator("#job-reason")).to_contain_text("exit status 7", timeout=PATIENCE_MS)
    expect(page.locator("#job-log")).to_contain_text("log-of-3", timeout=PATIENCE_MS)
    expect(page.locator("#job-cancel")).to_be_disabled()
    expect(page.locator("#failure-rows")).to_contain_text("exit status 7")

    (tmp_path / "OK").touch()
    page.get_by_role("button", name="Retry").click()
    text_of(page, "#count-failed", "0")
    text_of(page, "#count-done", "4")
    text_of(page, "#job-state", "done")
    text_of(page, "#job-reason", "\u2013")  # a retry starts the job afresh
    expect(page.locator("#failures")).to_be_hidden(timeout=PATIENCE_MS)
    page.get_by_role("button", name="Draw").click()
    expect(page.locator("#timeline-info")).to_contain_text("4 jobs on", timeout=PATIENCE_MS)
    assert page.evaluate("window.__sameDocument") is True

    page.locator("#worker-rows").get_by_role("button", name="Stop").click()
    assert worker.wait(timeout=PATIENCE_MS / 1000) == 0  # it finished and exited
    text_of(page, "#workers-alive", "0")


def test_without_the_token_the_browser_is_refused(procs, browser, tmp_path):
    web = Dashboard(procs, gated_sweep(tmp_path))
    context = browser.new_context()
    try:
        stranger = context.new_page()
        response = stranger.goto(web.base + "/")
        assert response is not None and response.status == 403
        assert "token" in stranger.content()
    finally:
        context.close()


def test_cancel_from_the_page_and_a_phone_sized_screen(procs, page, tmp_path):
    from playwright.sync_api import expect

    web = Dashboard(procs, gated_sweep(tmp_path))
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(web.url)
    page.reload()  # at "/" now, without the token: the cookie lets it in
    text_of(page, "#count-pending", "4")
    page.locator("#job-rows tr").nth(1).click()
    text_of(page, "#job-state", "pending")
    page.get_by_role("button", name="Cancel").click()
    text_of(page, "#job-state", "cancelled")
    text_of(page, "#count-cancelled", "1")
    expect(page.locator("#job-retry")).to_be_enabled(timeout=PATIENCE_MS)
    page.fill("#search", "4: WHILE")  # a part of a name, any case
    expect(page.locator("#job-rows tr")).to_have_count(1, timeout=PATIENCE_MS)
    expect(page.locator("#page-info")).to_have_text("1\u20131 of 1")
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"the page is {wide} px wide on a 390 px screen"


def test_shoal_run_dashboard_prints_a_url_that_opens_on_the_runs_own_queue(procs, page,
                                                                         tmp_path):
    """`shoal run --dashboard` on an in-process queue: only its own dashboard can show it.
    A job cancelled from the page is one the run does not print; the dashboard goes
    when the run ends."""
    from playwright.sync_api import expect

    go = tmp_path / "GO"
    run = procs.shoal("run", "--dashboard", "--dashboard-bind", "127.0.0.1:0", "--queue",
                      "memory://", "--slots", "2", "--no-progress",
                      f"while [ ! -e {go} ]; do sleep 0.05; done; echo said-{{}}",
                      ":::", "a", "b", "c", apart=True)
    web = Dashboard.beside(procs, run)
    page.goto(web.url)
    text_of(page, "#count-running", "2")
    text_of(page, "#count-pending", "1")
    text_of(page, "#workers-alive", "1")
    page.locator("#job-rows tr").nth(2).click()
    text_of(page, "#job-state", "pending")
    page.get_by_role("button", name="Cancel").click()
    text_of(page, "#count-cancelled", "1")
    expect(page.locator("#job-cancel")).to_be_disabled(timeout=PATIENCE_MS)
    go.touch()
    run.wait(timeout=PATIENCE_MS / 1000)
    assert sorted(procs.output(run).split()) == ["said-a", "said-b"]
    said = procs.errors(run)
    assert said.count("shoal dashboard of memory://") == 1 and "Traceback" not in said
    with pytest.raises(OSError):  # the run is over: so is its dashboard
        web.request("GET", "/api/overview")
