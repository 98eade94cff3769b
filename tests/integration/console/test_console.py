"""The web console in a real headless Chromium (Debian's, driven by Playwright) against a real API
and an operator of its own, whose Job pods run the `fake` provider on the process node.

What is asserted is what a person sees: the words on the page, the image the page shows (fetched
from its own src, without any header, and decoded), the status moving without a reload. A wait
that fails says what the page showed and where its screenshot is.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import httpx
import playwright.sync_api as playwright_sync
import pytest

from tests.integration.api.conftest import KEYS, launch
from tests.integration.operator.conftest import served_namespace
from tests.support.waits import wait_for

expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[3]
IMAGES = ROOT / "docs" / "images"
WAIT_MS = 90_000



def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}"
    assert data[12:16] == b"IHDR", "the PNG does not start with IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def console_api(cluster, tmp_path_factory):
    """An API over a namespace an operator of its own serves (as in tests/integration/cli)."""
    log = tmp_path_factory.mktemp("console-operator") / "operator.log"
    with served_namespace(cluster, log, "console") as (ns, _op):
        api = launch(cluster, ns, mongo_url=cluster.mongo_url, api_max_unfinished_per_user=0)
        yield api
        api.stop()


@pytest.fixture(scope="module")
def browser():
    # never skipped: a console nobody tested is not a console (make tools installs chromium)
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: `make tools` installs Debian's chromium"
    with playwright_sync.sync_playwright() as p:
        # Chromium's sandbox needs user namespaces that root in a container often lacks; as root only
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """One browser tab on the console, with what it saw: dialogs, CSP refusals, script errors."""

    def __init__(self, browser, api, shots: Path, width: int = 1280) -> None:
        self.api = api
        self.shots = shots
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     and "Content Security Policy" in m.text else None)
        self.page.set_default_timeout(15_000)

    def close(self) -> None:
        self.context.close()

    def what_it_shows(self, label: str) -> str:
        path = self.shots / f"{label}-{int(time.time() * 1000)}.png"
        try:
            self.page.screenshot(path=str(path), full_page=True)
            text = self.page.inner_text("body")
        except Exception as exc:  # noqa: BLE001 - the description of a failure must not fail
            return f"(the page could not be read: {exc})"
        try:            # the API's side of the live view: its open streams, and the page's last requests
            metrics = httpx.get(self.api.url + "/metrics", timeout=5).text
            streams = "\n".join(line for line in metrics.splitlines() if "sse" in line and not line.startswith("#"))
            listed = httpx.get(self.api.url + "/api/v1/ai/tasks", params={"limit": 10}, timeout=5,
                               headers={"Authorization": f"Bearer {KEYS['root']}"}).json()["data"]["tasks"]
            streams += "\n--- the tasks as the API has them (newest 10):\n" + "\n".join(
                f"{t['task_id']} {t['user_id']} {t['phase']} {t.get('message') or ''}" for t in listed)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            streams = f"(no /metrics or list: {exc})"
        return (f"the page showed (screenshot {path}):\n{text[:3000]}\n--- the API's event streams:\n{streams}"
                f"\n--- the page's last requests:\n" + "\n".join(self.requests[-15:]))

    def shows(self, locator, what: str, *, text: str | None = None, contains: str | None = None,
              timeout: float = WAIT_MS) -> None:
        """Wait until the locator is visible (with that text); on failure, say what the page showed."""
        try:
            if text is not None:
                expect(locator).to_have_text(text, timeout=timeout)
            elif contains is not None:
                expect(locator).to_contain_text(contains, timeout=timeout)
            else:
                expect(locator).to_be_visible(timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"waiting for {what}: {exc}\n{self.what_it_shows('failed')}") from None

    def open(self) -> None:
        self.page.goto(self.api.url + "/")

    def sign_in(self, user: str) -> None:
        self.open()
        self.page.get_by_label("API key").fill(KEYS.get(user, user))
        self.page.get_by_role("button", name="Sign in").click()
        self.shows(self.page.locator("#who"), f"{user} to be signed in", contains=user)
        self.page.evaluate("window.__sameDocument = true")       # gone if the page ever reloads

    def new_task(self):
        """Open the New task dialog; the dialog's locator."""
        self.page.get_by_role("button", name="New task").click()
        dialog = self.page.locator("#create-dialog")
        self.shows(dialog.get_by_label("Model"), "the create form")
        return dialog

    def settle(self, fn, *args):
        """fn(*args) after a short wait inside Playwright: its handlers and listeners run only then."""
        self.page.wait_for_timeout(100)
        return fn(*args)

    def reloaded(self) -> bool:
        return not self.page.evaluate("window.__sameDocument === true")


@pytest.fixture
def console(browser, console_api, tmp_path):
    made: list[Console] = []

    def tab(width: int = 1280) -> Console:
        made.append(Console(browser, console_api, tmp_path, width))
        return made[-1]
    yield tab
    for c in made:
        c.close()


def rest(api, user: str) -> httpx.Client:
    return api.client(user)


def test_the_console_is_served_with_a_strict_policy(console_api):
    with httpx.Client(base_url=console_api.url) as c:
        root = c.get("/")
        assert root.status_code == 307 and root.headers["location"] == "console/"
        page = c.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert "img-src 'self'" in csp and "media-src 'self'" in csp and "form-action 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script" in page.text and "<script>" not in page.text           # no inline script
        script = c.get("/console/console.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert c.get("/console/secrets.txt").status_code == 404


def test_a_wrong_key_is_refused_with_a_message(console):
    tab = console()
    tab.open()
    tab.page.get_by_label("API key").fill("not-a-key-of-anyone")
    tab.page.get_by_role("button", name="Sign in").click()
    tab.shows(tab.page.locator("#signin-error"), "the sign-in error", contains="The key was refused")
    assert tab.page.locator("#gallery").is_hidden()
    assert tab.page.evaluate("sessionStorage.length") == 0


def test_an_invalid_parameter_is_shown_next_to_its_field(console):
    tab = console()
    tab.sign_in("alice")
    page = tab.page
    form = tab.new_task()
    form.get_by_label("Type").select_option("image")
    form.get_by_label("Provider").select_option("volcengine")
    form.get_by_label("Model").select_option("doubao-seedream-4-0-250828")
    form.get_by_label("Prompt").fill("a lighthouse at dusk")
    form.locator("#p-size").select_option("custom")       # the catalog wants 921600.. pixels: 100x100 is too few
    form.get_by_label("size width in pixels").fill("100")
    form.get_by_label("size height in pixels").fill("100")
    form.get_by_role("button", name="Create").click()
    error = page.locator('.field[data-field="size"] .field-error')
    tab.shows(error, "the size error next to the size field", contains="921600")
    assert page.locator("#p-size").get_attribute("aria-invalid") == "true"
    assert page.locator("#create-dialog").is_visible() and page.locator("#create-error").inner_text() == ""
    page.keyboard.press("Escape")                            # Escape closes the dialog
    expect(page.locator("#create-dialog")).to_be_hidden()
    assert not tab.dialogs and not tab.errors


def test_a_task_from_the_form_completes_live_cancels_and_stays_private(console, console_api):
    tab = console()
    tab.sign_in("alice")
    page = tab.page

    # an image task from the form, with a size chosen from the catalog's select
    form = tab.new_task()
    form.get_by_label("Type").select_option("image")
    form.get_by_label("Provider").select_option("fake")
    form.get_by_label("Model").select_option("fake-image")
    form.get_by_label("Prompt").fill("a red fox in the snow")
    form.locator("#p-size").select_option("256x256")
    form.get_by_role("button", name="Create").click()
    tab.shows(page.locator("#task-title"), "the new task's page", contains="Task img-")
    image_id = page.locator("#task-title").inner_text().split()[-1]
    tab.shows(page.locator("#task-facts .status"), f"task {image_id} to complete", text="completed")
    src = page.locator("#task-media img").get_attribute("src")
    assert "signature=" in src, src
    with httpx.Client(timeout=30) as anyone:                   # the link works without any header
        shown = anyone.get(src)
    assert shown.status_code == 200, shown.text[:300]
    assert png_size(shown.content) == (256, 256)
    assert page.evaluate("document.querySelector('#task-media img').naturalWidth") == 256
    expect(page.locator("#timeline-list")).to_contain_text("Succeeded")
    for field in ("a red fox in the snow", "fake / fake-image", "size: 256x256"):
        expect(page.locator("#task-facts")).to_contain_text(field)
    # what it consumed and cost, by the price table: one image at the simulator's 0.01 XTS
    expect(page.locator("#task-usage")).to_have_text("images: 1")
    expect(page.locator("#task-cost")).to_have_text("0.01 XTS")

    # "make another like this": the form, filled with this task's fields; Escape closes it
    again = page.get_by_role("button", name="Make another like this")
    again.click()
    form = page.locator("#create-dialog")
    tab.shows(form.get_by_label("Prompt"), "the form filled from the task")
    assert form.get_by_label("Prompt").input_value() == "a red fox in the snow"
    assert form.get_by_label("Model").input_value() == "fake-image"
    assert form.locator("#p-size").input_value() == "256x256"
    page.keyboard.press("Escape")
    expect(form).to_be_hidden()
    expect(again).to_be_focused()

    # the gallery: the card shows the thumbnail; a task made elsewhere appears without a reload
    page.get_by_role("link", name="← Back to the tasks").click()
    card = page.locator(f'.card[data-task="{image_id}"]')
    tab.shows(card.locator("img"), "the image card's thumbnail")
    slow = rest(console_api, "alice").post("/api/v1/ai/video/task", json={
        "prompt": "a slow snail [latency:20s]", "provider": "fake", "model": "fake-video", "duration": 1})
    assert slow.status_code == 200, slow.text
    slow_id = slow.json()["data"]["task_id"]
    slow_card = page.locator(f'.card[data-task="{slow_id}"]')
    tab.shows(slow_card, f"the card of {slow_id}, made over REST, to appear")
    tab.shows(slow_card.locator(".status"), f"{slow_id} to run", text="processing")
    tab.shows(slow_card.locator(".progress"), f"the worker's progress message on {slow_id}'s card",
              contains="vendor job")

    # keyboard: focus the card, Enter opens its page; cancel it there
    slow_card.focus()
    page.keyboard.press("Enter")
    tab.shows(page.locator("#task-title"), "the slow task's page", contains=slow_id)
    expect(page.locator("#task-progress")).to_contain_text("vendor job")
    page.get_by_role("button", name="Cancel").click()
    tab.shows(page.locator("#task-facts .status"), f"{slow_id} to be cancelled", text="cancelled")
    assert not tab.reloaded(), "the page reloaded"
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)

    assert any("/api/v1/ai/events" in url for url in tab.requests), "the page never opened the event stream"

    # a video plays inline in its card, a text shows its start (and they make the screenshots say more)
    alice = rest(console_api, "alice")
    video = alice.post("/api/v1/ai/video/task", json={"prompt": "a disc crossing the frame", "provider": "fake",
                                                      "model": "fake-video", "duration": 1, "aspect_ratio": "16:9"})
    text = alice.post("/api/v1/ai/text/task", json={"prompt": "write a haiku about foxes", "provider": "fake",
                                                    "model": "fake-text", "max_tokens": 24})
    assert video.status_code == text.status_code == 200, (video.text, text.text)
    video_id, text_id = video.json()["data"]["task_id"], text.json()["data"]["task_id"]
    page.get_by_role("link", name="← Back to the tasks").click()
    player = page.locator(f'.card[data-task="{video_id}"] video')
    tab.shows(player, f"the video player of {video_id}")
    assert "signature=" in player.get_attribute("src") and player.get_attribute("controls") is not None
    tab.shows(page.locator(f'.card[data-task="{text_id}"] pre.preview'), f"the text preview of {text_id}")

    # screenshots for the README and docs/console.md
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.goto(f"{console_api.url}/console/#/task/{image_id}")
    tab.shows(page.locator("#task-media img"), "the image on the task page")
    expect(page.locator("#timeline-list li").first).to_be_visible()
    page.screenshot(path=str(IMAGES / "console-task-1280.png"))
    page.goto(f"{console_api.url}/console/#/")
    tab.shows(page.locator(f'.card[data-task="{image_id}"] img'), "the gallery")
    page.screenshot(path=str(IMAGES / "console-gallery-1280.png"))
    narrow = console(390)
    narrow.sign_in("alice")
    narrow.shows(narrow.page.locator(f'.card[data-task="{image_id}"] img'), "the gallery at 390 px")
    assert narrow.page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways at 390 px"
    narrow.page.screenshot(path=str(IMAGES / "console-gallery-390.png"))

    # bob sees neither task: not in his gallery, and their pages say not found
    other = console()
    other.sign_in("bob")
    other.shows(other.page.locator("#page-info"), "bob's gallery to load", contains="of")
    for task_id in (image_id, slow_id):
        assert other.page.locator(f'.card[data-task="{task_id}"]').count() == 0
        other.page.goto(f"{console_api.url}/console/#/task/{task_id}")
        other.shows(other.page.locator("#task-title"), f"bob's page of {task_id}", text="Task not found")
        expect(other.page.locator("#task")).to_contain_text("not yours")
        expect(other.page.get_by_role("link", name="Back to your tasks")).to_be_visible()


def test_a_prompt_is_shown_as_text_never_as_html(console, console_api):
    prompt = "<img src=x onerror=alert(1)> and <b>bold</b>"
    made = rest(console_api, "alice").post("/api/v1/ai/text/task", json={
        "prompt": prompt, "provider": "fake", "model": "fake-text", "max_tokens": 12})
    assert made.status_code == 200, made.text
    task_id = made.json()["data"]["task_id"]
    tab = console()
    tab.sign_in("alice")
    page = tab.page
    card = page.locator(f'.card[data-task="{task_id}"]')
    tab.shows(card.locator(".card-prompt"), "the card's prompt", text=prompt)
    tab.shows(card.locator(".status"), f"{task_id} to complete", text="completed")
    card.click()
    tab.shows(page.locator("#task-prompt"), "the task page's prompt", text=prompt)
    tab.shows(page.locator("#task-media pre"), "the text result")
    assert page.locator('img[src="x"]').count() == 0 and page.locator("#main b").count() == 0
    assert not tab.dialogs, f"a dialog fired: {tab.dialogs}"
    assert not tab.errors, tab.errors

    # delete asks first: "Keep it" keeps it, "Delete" deletes it and goes back to the gallery
    page.get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm-dialog")
    tab.shows(confirm, "the delete confirmation")
    expect(confirm).to_contain_text(task_id)
    confirm.get_by_role("button", name="Keep it").click()
    expect(confirm).to_be_hidden()
    assert rest(console_api, "alice").get(f"/api/v1/ai/task/result/{task_id}").status_code == 200
    page.get_by_role("button", name="Delete").click()
    confirm.get_by_role("button", name="Delete").click()
    tab.shows(page.locator("#gallery-title"), "the gallery after the delete")
    expect(page.locator(f'.card[data-task="{task_id}"]')).to_have_count(0)
    assert rest(console_api, "alice").get(f"/api/v1/ai/task/result/{task_id}").status_code == 404


def test_an_admin_sees_every_user_and_filters_by_one(console, console_api):
    made = rest(console_api, "bob").post("/api/v1/ai/text/task", json={
        "prompt": "bob's note", "provider": "fake", "model": "fake-text", "max_tokens": 4})
    assert made.status_code == 200, made.text
    bobs = made.json()["data"]["task_id"]
    tab = console()
    tab.sign_in("root")
    page = tab.page
    expect(page.locator("#who")).to_have_text("root (admin)")
    card = page.locator(f'.card[data-task="{bobs}"]')
    tab.shows(card, "bob's task in the admin's gallery")
    expect(card).to_contain_text("bob")
    users = page.get_by_label("User", exact=True)
    users.fill("alice")
    users.press("Enter")
    tab.shows(page.locator("#page-info"), "the gallery filtered to alice", contains="of")
    expect(card).to_have_count(0)
    users.fill("bob")
    users.press("Enter")
    tab.shows(card, "bob's task again, filtered to bob")


def test_the_api_down_shows_a_banner(console, cluster, console_api):
    own = launch(cluster, console_api.namespace, mongo_url=console_api.settings.mongo_url)
    try:
        tab = console()
        tab.api = own
        tab.sign_in("alice")
    finally:
        own.stop()
    tab.shows(tab.page.locator("#banner"), "the API-down banner", contains="Cannot reach the API")
    wait_for(lambda: tab.page.locator("#banner").inner_text(), 5, until=lambda t: "retrying" in t.lower(),
             what="the banner to say it retries")


def _event(task: dict, event_id: int) -> str:
    """One event as the stream sends it, with CRLF line ends and the JSON split over two data lines."""
    doc = json.dumps(task)
    cut = doc.index(",") + 1
    return f"id: {event_id}\r\nevent: task\r\ndata: {doc[:cut]}\r\ndata: {doc[cut:]}\r\n\r\n"


def test_the_event_reader_parses_the_stream_and_resumes_with_last_event_id(console, console_api):
    alice = rest(console_api, "alice")
    made = alice.post("/api/v1/ai/text/task", json={"prompt": "count to three", "provider": "fake",
                                                    "model": "fake-text", "max_tokens": 6})
    assert made.status_code == 200, made.text
    task_id = made.json()["data"]["task_id"]
    done = wait_for(lambda: alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"], 90,
                    until=lambda d: d["status"] == "completed", what=f"task {task_id} to complete")
    asked: list[dict] = []

    def stream(route, request):          # the API's stream, replaced by one written by hand
        asked.append(request.headers)
        if len(asked) == 1:
            running = {**done, "status": "processing", "phase": "Running", "message": "drawing, 50%"}
            body = "retry: 1000\r\n\r\n: ping\r\n\r\n" + _event(running, 900000001)
        else:                            # the reconnect: nothing more, and no hurry to come back
            body = "retry: 600000\n\n: ping\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    tab = console()
    tab.page.route("**/api/v1/ai/events*", stream)
    tab.sign_in("alice")
    card = tab.page.locator(f'.card[data-task="{task_id}"]')
    tab.shows(card.locator(".progress"), "the progress message from the stream", text="drawing, 50%")
    tab.shows(card.locator(".status"), "the status from the stream", text="processing")
    wait_for(lambda: tab.settle(len, asked), 20, until=lambda n: n >= 2,
             what="the console to reconnect after the stream ended")
    assert "last-event-id" not in asked[0] and asked[1]["last-event-id"] == "900000001"
    assert asked[0]["authorization"] == f"Bearer {KEYS['alice']}"
    assert not tab.errors, tab.errors


def test_without_the_event_stream_the_gallery_is_read_again_every_3_s(console, console_api):
    tab = console()
    lists: list[float] = []
    tab.page.route("**/api/v1/ai/events*", lambda route, request: route.fulfill(
        status=404, headers={"Content-Type": "application/json"},
        body='{"success": false, "data": null, "message": "not found"}'))
    tab.page.on("request", lambda r: lists.append(time.monotonic()) if "/api/v1/ai/tasks" in r.url else None)
    tab.sign_in("alice")
    wait_for(lambda: tab.settle(len, lists), 20, until=lambda n: n >= 3, what="the gallery to be read again (polling)")
    gaps = [b - a for a, b in zip(lists[1:], lists[2:], strict=False)]
    assert all(gap > 2 for gap in gaps), gaps


def test_a_new_task_shows_while_the_history_lags_behind(console, console_api):
    """The gallery pages come from the history (MongoDB), which lags the cluster; the stream is live.
    Here every page the browser reads leaves the new task out (as a lagging history would), and its
    card still appears from the stream and completes: a page read too early never hides a task."""
    marker = "a task the history has not caught up with"

    def lagging(route, request):
        answer = route.fetch()
        body = answer.json()
        tasks = body["data"]["tasks"]
        kept = [t for t in tasks if marker not in t["prompt"]]
        body["data"]["tasks"], body["data"]["total"] = kept, body["data"]["total"] - (len(tasks) - len(kept))
        route.fulfill(response=answer, json=body)
    tab = console()
    tab.page.route("**/api/v1/ai/tasks?*", lagging)
    tab.sign_in("alice")
    tab.shows(tab.page.locator("#page-info"), "the first page")
    made = rest(console_api, "alice").post("/api/v1/ai/text/task", json={
        "prompt": marker, "provider": "fake", "model": "fake-text", "max_tokens": 8})
    assert made.status_code == 200, made.text
    task_id = made.json()["data"]["task_id"]
    card = tab.page.locator(f'.card[data-task="{task_id}"]')
    tab.shows(card, f"the card of {task_id}, which no page of the history lists")
    tab.shows(card.locator(".status"), f"{task_id} to complete", text="completed")
    tab.shows(card.locator("pre.preview"), f"the text preview of {task_id}")
    assert not tab.errors, tab.errors
