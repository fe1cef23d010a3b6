"""`shoal dashboard` over HTTP, as a browser or a script meets it: a real `shoal dashboard`
process over a real sqlite queue; the token guards everything, actions need a POST with
it. (What a person sees in the page: test_web_browser.py.)"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import redis_queue_url, wait_for
from tests.procs import Procs

URL_LINE = re.compile(r"(http://\S+)/\?token=([0-9a-f]+)")


def need(module: str, why: str) -> None:
    """Skip (fail in CI) when a package the test needs is missing."""
    try:
        __import__(module)
    except ImportError:
        reason = f"{module} is not installed ({why})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


class Dashboard:
    """A running dashboard: its base URL and token, read from what it printed. Made by a
    `shoal dashboard` process of its own, or (`beside`) by `shoal run|serve --dashboard`,
    which print the URL on stderr."""

    def __init__(self, procs: Procs, queue: str, *more: str) -> None:
        self._watch(procs, procs.shoal("dashboard", queue, "--bind", "127.0.0.1:0", *more,
                                       apart=True), procs.output)

    @classmethod
    def beside(cls, procs: Procs, proc: subprocess.Popen[bytes]) -> Dashboard:
        web = cls.__new__(cls)
        web._watch(procs, proc, procs.errors)
        return web

    def _watch(self, procs: Procs, proc: subprocess.Popen[bytes],
               printed: Callable[[subprocess.Popen[bytes]], str]) -> None:
        need("starlette", "pip install 'shoal[web]'")
        need("uvicorn", "pip install 'shoal[web]'")
        self.proc = proc

        def url() -> tuple[str, str] | None:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited: {procs.errors(proc)}")
            match = URL_LINE.search(printed(proc))
            return (match.group(1), match.group(2)) if match else None

        found = wait_for(url, timeout_s=30, message="the dashboard to print its URL")
        self.base, self.token = found  # type: ignore[misc]
        self.url = f"{self.base}/?token={self.token}"

    def request(self, method: str, path: str, *, token: str | None = "query",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request; `token`: "query" (in the URL), "header", or None (no token)."""
        if token == "query":
            path += ("&" if "?" in path else "?") + f"token={self.token}"
        sent = dict(headers or {})
        if token == "header":
            sent["X-Shoal-Token"] = self.token
        where = urlsplit(self.base)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        try:
            conn.request(method, path, headers=sent)
            reply = conn.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, body
        return json.loads(body)


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=60)


def served(procs: Procs, tmp_path: Path, *more: str) -> tuple[subprocess.Popen[bytes], str]:
    """A `shoal serve` of a new sqlite queue and the status folder its clients use."""
    status = tmp_path / "st"
    server = procs.shoal("serve", f"sqlite://{tmp_path / 'q.db'}", "--status", str(status),
                         *more, apart=True)
    wait_for(lambda: (status / "status.json").exists() or server.poll() is not None,
             timeout_s=30, message="the coordinator's status file")
    assert server.poll() is None, procs.errors(server)
    return server, str(status)


@pytest.fixture(params=["sqlite", "folder", "tcp", "redis"])
def queue_url(request: pytest.FixtureRequest, procs: Procs, tmp_path: Path) -> str:
    """Five jobs (the third fails once run) on each kind of queue: tcp is a `shoal serve`
    of sqlite, redis a queue of its own on the session's redis-server (tests.redisd)."""
    if request.param == "tcp":
        url = served(procs, tmp_path)[1]
    elif request.param == "redis":
        url = redis_queue_url("redis")
    else:
        url = f"sqlite://{tmp_path / 'q.db'}" if request.param == "sqlite" else str(
            tmp_path / "q")
    done = shoal("submit", url, "echo out-{}; test {} -ne 3", ":::", "1", "2", "3", "4", "5")
    assert done.returncode == 0, done.stderr
    return url


def test_every_request_needs_the_token_and_the_first_visit_sets_a_cookie(procs, queue_url):
    web = Dashboard(procs, queue_url)
    for path in ("/", "/api/overview", "/api/jobs", "/api/events", "/static/dashboard.js"):
        status, _, body = web.request("GET", path, token=None)
        assert status == 403, path
        assert b"token" in body
    status, headers, body = web.request("GET", "/?token=" + "0" * 32, token=None)
    assert status == 403
    status, headers, body = web.request("GET", "/")
    assert status == 200 and b"shoal" in body
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    status, _, body = web.request("GET", "/api/overview", token=None, headers={"Cookie": cookie})
    assert status == 200
    assert json.loads(body)["counts"]["pending"] == 5


def test_actions_only_by_post_with_the_token_header(procs, queue_url):
    web = Dashboard(procs, queue_url)
    first = web.json("/api/jobs?size=1")["rows"][0]
    action = f"/api/jobs/{first['id']}/cancel"
    status, headers, _ = web.request("GET", "/")
    cookie = headers["set-cookie"].split(";")[0]
    assert web.request("GET", action)[0] == 405  # no action by GET
    assert web.request("POST", action, token=None, headers={"Cookie": cookie})[0] == 403
    assert web.request("POST", action)[0] == 403  # in the URL is not enough either
    assert web.json("/api/overview")["counts"]["cancelled"] == 0
    status, _, body = web.request("POST", action, token="header")
    assert status == 200 and json.loads(body)["changed"] == [first["id"]]
    assert web.json(f"/api/jobs/{first['id']}")["state"] == "cancelled"
    assert web.json("/api/overview")["counts"]["cancelled"] == 1


def test_read_only_refuses_actions(procs, queue_url):
    web = Dashboard(procs, queue_url, "--read-only")
    first = web.json("/api/jobs?size=1")["rows"][0]
    status, _, body = web.request("POST", f"/api/jobs/{first['id']}/cancel", token="header")
    assert status == 403 and b"read-only" in body
    assert web.json(f"/api/jobs/{first['id']}")["state"] == "pending"


def test_jobs_in_input_order_paged_and_filtered_with_reasons_and_logs(procs, queue_url):
    assert shoal("work", queue_url, "--drain", "-q", "--slots", "2").returncode == 0
    web = Dashboard(procs, queue_url)
    page = web.json("/api/jobs?size=2&page=1")
    assert page["total"] == 5
    assert [row["seq"] for row in page["rows"]] == [3, 4]
    failed = web.json("/api/jobs?state=failed")
    assert failed["total"] == 1 and [row["seq"] for row in failed["rows"]] == [3]
    job = web.json(f"/api/jobs/{failed['rows'][0]['id']}")
    assert job["state"] == "failed" and job["exit_code"] == 1
    assert "exit status 1" in job["reason"]
    assert "out-3" in job["log"]
    found = web.json("/api/jobs?q=OUT-4")
    assert found["total"] == 1 and [row["seq"] for row in found["rows"]] == [4]
    assert web.json("/api/jobs?q=out-&state=failed")["total"] == 1
    status, _, body = web.request("GET", "/api/jobs?state=bogus")
    assert status == 400 and b"bogus" in body
    assert web.request("GET", "/api/jobs/nosuchjob")[0] == 404
    assert web.json("/api/failures")["failures"] == [
        {"reason": "exit status 1", "count": 1, "jobs": [failed["rows"][0]["name"]]}]
    assert web.request("POST", "/api/workers/nobody/stop", token="header")[0] == 404
    line = web.json("/api/timeline")
    assert sorted(bar[4] for bar in line["bars"]) == [1, 2, 3, 4, 5]
    assert 1 <= len(line["lanes"]) <= 2  # one worker, two slots
    assert all(0 <= bar[1] <= bar[2] <= line["span"] for bar in line["bars"])
    assert web.request("GET", "/static/../app.py")[0] == 404


def test_search_finds_a_parameter_by_name_and_value(procs, tmp_path):
    table = tmp_path / "sweep.csv"
    table.write_text("alpha,beta\n1,20\n3,40\n5,20\n")
    url = f"sqlite://{tmp_path / 'q.db'}"
    done = shoal("submit", "--table", str(table), url, "echo {alpha}")
    assert done.returncode == 0, done.stderr
    web = Dashboard(procs, url)
    found = web.json("/api/jobs?q=BETA=20")  # in no job's name: only its parameters
    assert found["total"] == 2 and [row["seq"] for row in found["rows"]] == [1, 3]
    assert web.json("/api/jobs?q=alpha=3")["total"] == 1
    assert web.json("/api/jobs?q=beta=20&state=done")["total"] == 0
    assert web.json(f"/api/jobs/{found['rows'][1]['id']}")["params"] == {
        "alpha": "5", "beta": "20"}


def test_serve_dashboard_shows_the_served_queue_and_stops_with_it(procs, tmp_path):
    server, status = served(procs, tmp_path, "--dashboard", "--dashboard-bind", "127.0.0.1:0")
    web = Dashboard.beside(procs, server)
    assert shoal("submit", status, "echo out-{}", ":::", "1", "2", "3").returncode == 0
    rows = web.json("/api/jobs")["rows"]
    assert [row["seq"] for row in rows] == [1, 2, 3]
    code, _, body = web.request("POST", f"/api/jobs/{rows[1]['id']}/cancel", token="header")
    assert code == 200 and json.loads(body)["changed"] == [rows[1]["id"]]
    assert shoal("work", status, "--drain", "-q").returncode == 0
    assert web.json("/api/overview")["counts"] == {
        "waiting": 0, "pending": 0, "running": 0, "done": 2, "failed": 0, "cancelled": 1}
    assert "out-3" in web.json(f"/api/jobs/{rows[2]['id']}")["log"]
    assert [row["seq"] for row in web.json("/api/jobs?page=1&size=2")["rows"]] == [3]
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    with pytest.raises(OSError):  # stopped with the coordinator: nobody listens
        web.request("GET", "/api/overview")
    said = procs.errors(server)
    assert said.count("shoal dashboard of ") == 1 and "Traceback" not in said


def test_dashboard_options_of_run_and_serve_are_one_line_when_wrong(tmp_path):
    done = shoal("run", "--dashboard-bind", "nowhere", "echo", ":::", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "shoal: error: --dashboard-bind: 'nowhere' is not HOST:PORT (e.g. 127.0.0.1:8265, "
        "0.0.0.0:8265 for every interface)"]
    done = shoal("serve", f"sqlite://{tmp_path / 'q.db'}", "--status", str(tmp_path / "st"),
                 "--dashboard-bind", "256.1.1.1:1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("shoal: error: --dashboard-bind: ")
    for words in (["run", "--dashboard", "echo", ":::", "1"],
                  ["serve", "--status", str(tmp_path / "st"), "--dashboard"]):
        hide = ("import sys; sys.modules['uvicorn'] = None; from shoal.cli import main; "
                f"main({words!r}, prog_name='shoal')")
        done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            "shoal: error: --dashboard needs the web extra (uvicorn is missing): "
            "pip install 'shoal[web]'"]


def test_bad_bind_is_one_line_naming_the_option(queue_url):
    done = shoal("dashboard", queue_url, "--bind", "nowhere")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "shoal: error: --bind: 'nowhere' is not HOST:PORT (e.g. 127.0.0.1:8265, "
        "0.0.0.0:8265 for every interface)"]


def test_a_missing_queue_is_one_line(tmp_path):
    done = shoal("dashboard", f"sqlite://{tmp_path / 'none.db'}")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "none.db" in done.stderr


def test_the_event_stream_tells_counts_as_jobs_finish(procs, queue_url):
    web = Dashboard(procs, queue_url)
    where = urlsplit(web.base)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        conn.request("GET", f"/api/events?token={web.token}")
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.getheader("content-type").startswith("text/event-stream")

        def next_counts() -> dict[str, int]:
            while True:
                line = stream.readline().decode()
                if line.startswith("data: "):
                    return json.loads(line[len("data: "):])["counts"]

        assert next_counts()["pending"] == 5
        procs.shoal("work", queue_url, "--drain", "-q", apart=True)
        seen, deadline = next_counts(), time.monotonic() + 60
        while seen["done"] + seen["failed"] < 5:  # each event a fresh read, never a reload
            assert time.monotonic() < deadline, f"the stream still says {seen} after 60 s"
            seen = next_counts()
        assert seen == {"waiting": 0, "pending": 0, "running": 0, "done": 4, "failed": 1,
                        "cancelled": 0}
    finally:
        conn.close()


def test_a_queue_out_of_reach_is_one_line_and_the_dashboard_stays(procs, tmp_path):
    server, status = served(procs, tmp_path)
    assert shoal("submit", status, "true", ":::", "1", "2").returncode == 0
    web = Dashboard(procs, status)
    assert web.json("/api/overview")["total"] == 2
    server.terminate()
    server.wait(timeout=30)

    def refused() -> tuple[int, bytes] | None:
        code, _, body = web.request("GET", "/api/overview")
        return (code, body) if code != 200 else None

    code, body = wait_for(refused, timeout_s=60, message="the dashboard to notice")  # type: ignore[misc]
    assert code == 503
    error = json.loads(body)["error"]
    assert error and "\n" not in error and "Traceback" not in error
    assert web.proc.poll() is None  # still serving
    assert "Traceback" not in procs.errors(web.proc)


def test_without_the_web_extra_one_line_says_what_to_install(queue_url):
    hide = ("import sys; sys.modules['starlette'] = None; from shoal.cli import main; "
            f"main(['dashboard', {queue_url!r}], prog_name='shoal')")
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "shoal: error: shoal dashboard needs the web extra (starlette is missing): "
        "pip install 'shoal[web]'"]
