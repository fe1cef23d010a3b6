"""`shoal report`: one self-contained HTML file a user can mail, checked as text and as a
person sees it opened from disk in the browser (Playwright + Debian chromium)."""

from __future__ import annotations

import re

from tests.test_web import shoal
from tests.test_web_browser import PATIENCE_MS, browser  # noqa: F401 - a fixture


def finished_sweep(tmp_path) -> str:
    url = f"sqlite://{tmp_path / 'q.db'}"
    made = shoal("submit", url, "echo {}; test {} -lt 4 || exit 5", ":::", *map(str, range(1, 7)))
    assert made.returncode == 0, made.stderr
    assert shoal("work", url, "--drain", "-q").returncode == 0
    return url


def test_report_is_one_file_with_counts_failures_and_results(tmp_path):
    url = finished_sweep(tmp_path)
    out = tmp_path / "mail" / "report.html"
    out.parent.mkdir()
    done = shoal("report", url, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report of 6 job(s) written to {out}"
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=|https?://|<script""", page)  # nothing fetched
    assert "exit status 5" in page and "<td class='n'>3</td>" in page  # 3 jobs, one reason
    assert page.index(">1: echo 1;") < page.index(">2: echo 2;") < page.index(">6: echo 6;")


def test_report_opened_from_disk_shows_what_happened(tmp_path, browser):  # noqa: F811
    from playwright.sync_api import expect

    url = finished_sweep(tmp_path)
    out = tmp_path / "report.html"
    assert shoal("report", url, "-o", str(out)).returncode == 0
    context = browser.new_context(viewport={"width": 1280, "height": 800}, offline=True)
    try:
        page = context.new_page()
        page.goto(out.as_uri())
        expect(page.locator("#count-done")).to_have_text("3", timeout=PATIENCE_MS)
        expect(page.locator("#count-failed")).to_have_text("3")
        expect(page.locator("#failures")).to_contain_text("exit status 5")
        expect(page.locator("#result-rows tr")).to_have_count(6)
        expect(page.locator("#durations")).to_contain_text("failed")
        expect(page.locator("#timeline")).to_contain_text("6 jobs on")
        expect(page.locator("#timeline rect")).to_have_count(6)
    finally:
        context.close()


def test_report_to_a_missing_folder_is_one_line(tmp_path):
    url = finished_sweep(tmp_path)
    done = shoal("report", url, "-o", str(tmp_path / "nowhere" / "r.html"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"shoal: error: {tmp_path / 'nowhere' / 'r.html'}: No such file or directory"]


def test_executor_report_writes_the_same_file_for_its_calls(tmp_path):
    import shoal as api
    from tests.callfns import boom_on

    out = tmp_path / "calls.html"
    with api.Executor(workers=2) as ex:
        futures = [ex.submit(boom_on, x, 3) for x in range(5)]
        for future in futures:
            future.exception(timeout=60)  # every call has ended, one of them failed
        assert ex.report(out) == 5
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=|https?://|<script""", page)  # nothing fetched
    assert "item 3" in page and "<td class='n'>1</td>" in page  # one failure, its reason
    assert page.count("boom_on(") >= 5  # the results table: each call by name
