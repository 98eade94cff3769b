"""`gentask task …` against the real API, with the operator running the tasks on the local cluster.

Each command runs as a user runs it (`python -m gentask task …`, URL and key from GENTASK_URL
and GENTASK_API_KEY); the assertions are what the user sees: stdout, stderr, the exit code and
the files written.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest
import yaml
from bson import Binary

from gentask.cli.task import (
    EXIT_CANCELLED,
    EXIT_CORRUPT,
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from tests.integration.api.conftest import KEYS, free_port, launch
from tests.integration.operator.conftest import Tasks, served_namespace
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def cli_api(cluster, tmp_path_factory):
    """An API over a namespace an operator of its own serves, mirroring where the workers write."""
    with served_namespace(cluster, tmp_path_factory.mktemp("cli-operator") / "operator.log", "cli") as (ns, _op):
        api = launch(cluster, ns, mongo_url=cluster.mongo_url, api_max_unfinished_per_user=0)
        yield api
        api.stop()


def gentask(api, *args: str, key: str | None = KEYS["alice"], timeout: float = 300,
            url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENTASK_URL": url or api.url}
    env.pop("GENTASK_API_KEY", None)
    if key is not None:
        env["GENTASK_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "gentask", "task", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


def test_create_wait_get_list_download_delete(cli_api, tmp_path):
    made = gentask(cli_api, "create", "image", "a red fox in the snow", "--provider", "fake", "--model", "fake-image",
                   "--size", "64x64", "--wait")
    assert made.returncode == 0, made.stderr
    assert "status:" in made.stdout and "completed (Succeeded" in made.stdout
    assert any(line.split() == ["cost:", "0.01", "XTS"] for line in made.stdout.splitlines()), made.stdout
    task_id = next(line.split()[-1] for line in made.stdout.splitlines() if line.startswith("task_id:"))
    # not a terminal: plain lines, one a change, the last one Succeeded
    lines = made.stderr.strip().splitlines()
    assert lines[0] == f"created {task_id}" and lines[-1].split()[:2] == [task_id, "Succeeded"]
    assert "\r" not in made.stderr and "\x1b" not in made.stderr

    task = _json(gentask(cli_api, "get", task_id, "-o", "json"))
    assert (task["task_id"], task["status"], task["model"]) == (task_id, "completed", "fake-image")
    as_yaml = yaml.safe_load(gentask(cli_api, "get", task_id, "-o", "yaml").stdout)
    assert as_yaml["task_id"] == task_id
    page = _json(gentask(cli_api, "list", "--type", "image", "-o", "json"))
    assert task_id in [t["task_id"] for t in page["tasks"]]
    table = gentask(cli_api, "list", "--type", "image")
    assert table.stdout.splitlines()[0].split() == ["TASK_ID", "TYPE", "PHASE", "MODEL", "USER", "AGE"]
    assert any(line.split()[:3] == [task_id, "image", "Succeeded"] for line in table.stdout.splitlines())

    got = gentask(cli_api, "download", task_id, "--dir", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    artifact = task["result"]["artifacts"][0]
    kept = tmp_path / "out" / artifact["name"]
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == artifact["sha256"]
    assert kept.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(checked)" in got.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [artifact["name"]]    # no .part left

    assert gentask(cli_api, "delete", task_id).returncode == 0
    gone = gentask(cli_api, "get", task_id)
    assert gone.returncode == EXIT_REFUSED and "404" in gone.stderr and task_id in gone.stderr
    assert "gentask task list" in gone.stderr


def test_wait_exits_by_the_outcome_failed_and_cancelled(cli_api):
    failed = gentask(cli_api, "create", "text", "no [fail:content_rejected]", "--provider", "fake",
                     "--model", "fake-text", "--set", "retries=0", "--wait")
    assert failed.returncode == EXIT_FAILED, failed.stderr
    assert "failed (Failed, ContentRejected)" in failed.stdout
    slow = _json(gentask(cli_api, "create", "text", "slow [latency:120s]", "--provider", "fake", "--model",
                         "fake-text", "-o", "json"))
    assert gentask(cli_api, "cancel", slow["task_id"]).returncode == 0
    cancelled = gentask(cli_api, "wait", slow["task_id"], "-o", "json")
    assert cancelled.returncode == EXIT_CANCELLED, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"


def test_wait_gives_up_after_its_timeout_and_the_task_goes_on(cli_api):
    slow = _json(gentask(cli_api, "create", "text", "slow [latency:120s]", "--provider", "fake", "--model",
                         "fake-text", "-o", "json"))
    gave_up = gentask(cli_api, "wait", slow["task_id"], "--timeout", "1")
    assert gave_up.returncode == EXIT_TIMEOUT
    assert "--timeout" in gave_up.stderr and f"gentask task wait {slow['task_id']}" in gave_up.stderr
    assert _json(gentask(cli_api, "get", slow["task_id"], "-o", "json"))["status"] in ("pending", "processing")
    gentask(cli_api, "cancel", slow["task_id"])


def test_watch_prints_every_change_as_json_lines(cli_api):
    made = _json(gentask(cli_api, "create", "text", "write a haiku", "--provider", "fake", "--model", "fake-text",
                         "-o", "json"))
    watched = gentask(cli_api, "watch", made["task_id"], "-o", "json")
    assert watched.returncode == 0, watched.stderr
    states = [json.loads(line) for line in watched.stdout.splitlines()]
    order = ["Pending", "Queued", "Running", "Succeeded"]
    phases = [order.index(s["phase"]) for s in states]
    assert phases == sorted(phases) and states[-1]["phase"] == "Succeeded"
    assert states[-1]["result"]["text_result"]


def test_watch_without_a_task_follows_all_of_mine_from_the_event_stream(cli_api):
    """`gentask task watch` (no id): every change of the caller's tasks, none of another user's."""
    env = {**os.environ, "GENTASK_URL": cli_api.url, "GENTASK_API_KEY": KEYS["alice"]}
    watcher = subprocess.Popen([sys.executable, "-m", "gentask", "task", "watch", "-o", "json", "--timeout", "120"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        bobs = _json(gentask(cli_api, "create", "text", "bob's", "--provider", "fake", "--model", "fake-text",
                             "-o", "json", key=KEYS["bob"]))
        mine = _json(gentask(cli_api, "create", "text", "mine", "--provider", "fake", "--model", "fake-text",
                             "--wait", "-o", "json"))
        seen: list[dict] = []
        assert watcher.stdout is not None
        for line in watcher.stdout:
            seen.append(json.loads(line))
            if seen[-1]["task_id"] == mine["task_id"] and seen[-1]["phase"] == "Succeeded":
                break
        assert {s["task_id"] for s in seen} >= {mine["task_id"]}
        assert bobs["task_id"] not in {s["task_id"] for s in seen}
    finally:
        watcher.kill()
        watcher.communicate()


def test_a_terminal_gets_one_live_line(cli_api):
    """On a TTY the progress is redrawn in place (carriage return, erase line) and ends with a tick."""
    made = _json(gentask(cli_api, "create", "text", "write a haiku [latency:2s]", "--provider", "fake", "--model",
                         "fake-text", "-o", "json"))
    master, slave = pty.openpty()
    env = {**os.environ, "GENTASK_URL": cli_api.url, "GENTASK_API_KEY": KEYS["alice"], "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "gentask", "task", "wait", made["task_id"]], env=env,
                            stdout=subprocess.PIPE, stderr=slave, text=False)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0, seen
    assert b"\r\x1b[2K" in seen and "✓".encode() in seen and b"Succeeded" in seen
    assert b"status:" in out


def test_usage_errors_say_what_is_wrong(cli_api):
    missing = gentask(cli_api, "create", "image")
    assert missing.returncode == EXIT_USAGE and "the following arguments are required: prompt" in missing.stderr
    bad_set = gentask(cli_api, "create", "text", "hi", "--provider", "fake", "--model", "fake-text", "--set", "x")
    assert bad_set.returncode == EXIT_USAGE and "--set takes FIELD=VALUE" in bad_set.stderr
    bad_url = gentask(cli_api, "list", url="ftp://example")
    assert bad_url.returncode == EXIT_USAGE and "--url must be an http(s) URL" in bad_url.stderr
    unknown = gentask(cli_api, "frobnicate")
    assert unknown.returncode == EXIT_USAGE and "invalid choice: 'frobnicate'" in unknown.stderr


def test_the_api_refusing_and_the_api_away_have_their_own_exit_codes(cli_api):
    no_key = gentask(cli_api, "list", key="not-a-key")
    assert no_key.returncode == EXIT_REFUSED and "401" in no_key.stderr and "GENTASK_API_KEY" in no_key.stderr
    bad_size = gentask(cli_api, "create", "image", "a fox", "--provider", "fake", "--model", "fake-image",
                       "--size", "3x3")
    assert bad_size.returncode == EXIT_REFUSED
    assert "size:" in bad_size.stderr and "accepted:" in bad_size.stderr       # the field and what it takes
    away = gentask(cli_api, "list", url=f"http://127.0.0.1:{free_port()}")
    assert away.returncode == EXIT_UNREACHABLE and "cannot reach the API" in away.stderr
    assert "GENTASK_URL" in away.stderr
    others = _json(gentask(cli_api, "create", "text", "mine", "--provider", "fake", "--model", "fake-text",
                           "-o", "json"))
    stranger = gentask(cli_api, "get", others["task_id"], key=KEYS["bob"])
    assert stranger.returncode == EXIT_REFUSED and "404" in stranger.stderr


def test_a_download_that_does_not_match_its_sha256_is_not_kept(cli_api, cluster, tmp_path):
    made = gentask(cli_api, "create", "image", "a fox", "--provider", "fake", "--model", "fake-image",
                   "--size", "64x64", "--wait", "-o", "json")
    task = _json(made)
    uid = Tasks(cluster, cli_api.namespace).get(task["task_id"])["metadata"]["uid"]
    db = pymongo.MongoClient(cluster.mongo_url).get_default_database()
    entry = wait_for(lambda: db["artifacts.catalog"].find_one({"taskUID": uid}), 30, what="the artifact's entry")
    chunk = db["artifacts.chunks"].find_one({"files_id": entry["fileId"], "n": 0})
    altered = bytes(chunk["data"][:-1]) + bytes([chunk["data"][-1] ^ 0xFF])
    db["artifacts.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": Binary(altered)}})
    got = gentask(cli_api, "download", task["task_id"], "--dir", str(tmp_path))
    assert got.returncode == EXIT_CORRUPT and "does not match" in got.stderr
    assert list(tmp_path.iterdir()) == []


def test_text_from_the_api_cannot_drive_the_terminal(cli_api):
    made = _json(gentask(cli_api, "create", "text", "red \x1b[31mtext\x1b[0m \x07bell", "--provider", "fake",
                         "--model", "fake-text", "-o", "json"))
    shown = gentask(cli_api, "get", made["task_id"])
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "red  [31mtext" in shown.stdout
    # the JSON output keeps the prompt exactly: it is data, not display
    assert _json(gentask(cli_api, "get", made["task_id"], "-o", "json"))["prompt"] == "red \x1b[31mtext\x1b[0m \x07bell"


IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"


def screenshot_of_terminal(screen: str, path: Path) -> None:
    """What tmux showed, drawn by a real browser as a terminal draws it, into a PNG."""
    import playwright.sync_api as playwright_sync
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: `make tools` installs Debian's chromium"
    lines = screen.rstrip("\n").splitlines()
    page_html = ("<html><body style='margin:0;background:#1d1f21'><pre style='margin:0;padding:14px 18px;"
                 "color:#d8dee9;font:15px/1.35 DejaVu Sans Mono,monospace'>" + html.escape("\n".join(lines))
                 + "</pre></body></html>")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 80})
            page.set_content(page_html)
            page.locator("pre").screenshot(path=str(path))
        finally:
            browser.close()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_under_tmux_the_wait_is_one_live_line_on_the_screen(cli_api, tmp_path):
    """A real terminal (tmux): the progress line is redrawn in place while the task runs, and ends ✓."""
    assert shutil.which("tmux"), "tmux is missing: `make tools` installs it (hack/system-packages.sh)"
    server = f"gentask-test-{os.getpid()}"          # our own tmux server: stopped by name below, no other
    tmux = ["tmux", "-L", server]
    command = (f"{sys.executable} -m gentask task create text 'a haiku [latency:4s]' --provider fake "
               f"--model fake-text --wait > {tmp_path / 'out.txt'}; echo EXIT=$?; sleep 600")
    subprocess.run([*tmux, "new-session", "-d", "-s", "cli", "-x", "150", "-y", "12",
                    "-e", f"GENTASK_URL={cli_api.url}", "-e", f"GENTASK_API_KEY={KEYS['alice']}",
                    "-e", "TERM=xterm-256color", command], check=True)
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "cli"], capture_output=True, text=True,
                                  check=True).stdout
        running = wait_for(screen, 120, interval=0.2, until=lambda s: " Running " in s,
                           what="the live line to show Running")
        live = [line for line in running.splitlines() if " Running " in line]
        assert len(live) == 1 and live[0][0] in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏", running
        screenshot_of_terminal(running, IMAGES / "cli-wait.png")       # the README's, never stale
        assert live[0].split()[1].startswith("txt-") and live[0].split()[3].endswith("s")   # id, phase, elapsed
        done = wait_for(screen, 120, interval=0.2, until=lambda s: "EXIT=" in s, what="the command to end")
        assert "EXIT=0" in done
        ticks = [line for line in done.splitlines() if line.startswith("✓ ")]
        assert len(ticks) == 1 and " Succeeded " in ticks[0], done
        assert not any(" Running " in line for line in done.splitlines()), done    # redrawn, not scrolled
        assert "completed (Succeeded" in (tmp_path / "out.txt").read_text()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
