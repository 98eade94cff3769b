"""`gentask task …`: create, follow, list and download tasks over the REST API.

    gentask task create image "a red fox in the snow" --provider fake --model fake-image --size 512x512 --wait
    gentask task get|wait|watch|cancel|delete|download TASK_ID
    gentask task watch                (every change of all your tasks, from the API's event stream)
    gentask task list [--user-id U] [--type image] [--status completed] [--limit 20] [--offset 0]

The API and the key come from --url/--api-key or GENTASK_URL/GENTASK_API_KEY (default
http://127.0.0.1:8080, no key). `wait`, `watch` and `create --wait` follow the task until it
ends: a live line (phase, elapsed, the worker's progress message) on a terminal, a plain line a
change otherwise. Exit codes (EXIT_CODES): 0 done (a followed task succeeded), 1 the task failed,
2 usage error, 3 the task was cancelled, 4 the API cannot be reached (or cannot reach the
cluster), 5 the API refused the request (bad key, unknown task, invalid field: its message is
printed), 6 --timeout ran out while following, 7 a downloaded file did not match its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpx

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_CORRUPT = range(8)
EXIT_CODES = {
    EXIT_OK: "done; a followed task succeeded",
    EXIT_FAILED: "the task failed",
    EXIT_USAGE: "usage error",
    EXIT_CANCELLED: "the task was cancelled",
    EXIT_UNREACHABLE: "the API cannot be reached, or cannot reach the cluster",
    EXIT_REFUSED: "the API refused the request (its message is printed)",
    EXIT_TIMEOUT: "--timeout ran out while following the task",
    EXIT_CORRUPT: "a downloaded file did not match its sha256",
}
OUTCOME = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
DEFAULT_URL = "http://127.0.0.1:8080"
PREFIX = "/api/v1/ai"
POLL_MIN, POLL_MAX = 0.5, 2.0
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class CliError(Exception):
    """What to print and the exit code to leave with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- the REST API -----------------------------------------------------------------------------


class Api:
    """The REST API at `url`, with a key; every answer's envelope unpacked, every failure a CliError."""

    def __init__(self, url: str, key: str | None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(EXIT_USAGE, f"--url must be an http(s) URL such as {DEFAULT_URL}, got {url!r}")
        self.url = url.rstrip("/")
        self.origin = (parts.scheme, parts.netloc)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The `data` of the answer; CliError with the API's message when it refused."""
        response = self._send(method, self.url + path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict) and body.get("success") is not False:
            return body.get("data")
        raise self.refused(response)

    def _send(self, method: str, url: str, *, stream: bool = False, headers: Mapping[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:
        # the key goes only to the API's own origin, never to a host a link names
        headers = {**(self.headers if self._same_origin(url) else {}), **(headers or {})}
        try:
            request = self.http.build_request(method, url, headers=headers, **kwargs)
            return self.http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise CliError(EXIT_UNREACHABLE, f"the API at {self.url} did not answer in time ({exc})") from exc
        except httpx.HTTPError as exc:
            raise CliError(EXIT_UNREACHABLE, f"cannot reach the API at {self.url}: {exc} (is it running? "
                                             "--url or GENTASK_URL says where it is)") from exc

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self.origin

    def refused(self, response: httpx.Response) -> CliError:
        """The CliError of an answer that is not a success (a streamed one is read first)."""
        response.read()
        try:
            body = response.json()
        except ValueError:
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        message = message or response.text[:300] or response.reason_phrase
        details = [f"  {e.get('field')}: {e.get('message') or 'invalid'} (given {e.get('value')!r}; accepted: "
                   f"{e.get('accepted')})" for e in (body.get("errors") or [] if isinstance(body, dict) else [])
                   if isinstance(e, dict)]
        hint = {401: "set GENTASK_API_KEY (or pass --api-key) to a key the API knows",
                403: "this key may act only for its own user (an admin key may name others)",
                404: "`gentask task list` shows your tasks",
                429: "wait a little and try again"}.get(response.status_code)
        text = "\n".join([f"the API answered {response.status_code}: {message}", *details] +
                          ([f"({hint})"] if hint else []))
        if response.status_code in (502, 503, 504):
            return CliError(EXIT_UNREACHABLE, text)
        return CliError(EXIT_REFUSED, text)

    def download(self, url: str, into: IO[bytes]) -> str:
        """Stream a file into `into`; returns its sha256 (hex)."""
        response = self._send("GET", urljoin(self.url + "/", url), stream=True)
        try:
            if not response.is_success:
                raise self.refused(response)
            digest = hashlib.sha256()
            for chunk in response.iter_bytes():
                digest.update(chunk)
                into.write(chunk)
            return digest.hexdigest()
        finally:
            response.close()


# --- following a task ---------------------------------------------------------------------------


def _finished(task: Mapping[str, Any]) -> bool:
    return task.get("status") in OUTCOME


def follow(api: Api, task_id: str, *, timeout: float | None, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """Every new state of the task (phase or message changed) until it has finished; CliError on timeout.

    The task's event stream tells each change as it happens (resumed with Last-Event-ID when the
    connection drops); an API without event streams is polled instead."""
    start = clock()
    task = api.call("GET", f"{PREFIX}/task/result/{task_id}")
    yield task
    if _finished(task):
        return
    last = (task.get("phase"), task.get("message"))

    def left() -> float | None:
        return None if timeout is None else timeout - (clock() - start)

    def give_up(task: Mapping[str, Any]) -> CliError:
        return CliError(EXIT_TIMEOUT, f"task {task_id} is still {task.get('phase')} after {timeout:g} s "
                                      f"(--timeout); it goes on: `gentask task wait {task_id}` follows it again")
    streamed = yield from _streamed(api, task_id, last, left)
    if streamed is not None:
        if not _finished(streamed):
            raise give_up(streamed)
        return
    interval = POLL_MIN
    while True:                                     # no event stream here: poll
        remaining = left()
        if remaining is not None and remaining <= 0:
            raise give_up(task)
        sleep(interval if remaining is None else min(interval, remaining))
        interval = min(POLL_MAX, interval * 1.5)
        task = api.call("GET", f"{PREFIX}/task/result/{task_id}")
        seen = (task.get("phase"), task.get("message"))
        if seen != last:
            last, interval = seen, POLL_MIN
            yield task
        if _finished(task):
            return


def _streamed(api: Api, task_id: str, last: tuple[Any, Any], left: Callable[[], float | None]
              ) -> Generator[dict[str, Any], None, dict[str, Any] | None]:
    """The task's changes from its event stream; returns the last state seen (finished, or when the
    time ran out), or None when the API has no event stream (the caller polls)."""
    url, event_id, state, drops = f"{api.url}{PREFIX}/task/{task_id}/events", None, None, 0
    while True:
        remaining = left()
        if remaining is not None and remaining <= 0:
            return state or {"phase": last[0]}
        headers = {**api.headers, "Accept": "text/event-stream"}
        if event_id:
            headers["Last-Event-ID"] = event_id
        read = 60.0 if remaining is None else max(0.1, min(60.0, remaining))
        try:
            with api.http.stream("GET", url, headers=headers, timeout=httpx.Timeout(30, read=read)) as response:
                if response.status_code == 204:           # resumed after the final event
                    return state
                if response.status_code == 404 and state is None and drops == 0:
                    return None                           # no such route here: an older API
                if response.status_code != 200:
                    raise api.refused(response)
                for event in _events(response.iter_lines()):
                    event_id = event.get("id") or event_id
                    if event.get("event") != "task":
                        continue
                    task = json.loads(event["data"])
                    state = task if isinstance(task, dict) else state
                    if not isinstance(task, dict):
                        continue
                    seen = (task.get("phase"), task.get("message"))
                    if seen != last:
                        last = seen
                        yield task
                    if _finished(task):
                        return task
        except httpx.ReadTimeout:
            continue                                      # quiet for a while: check the clock, go on
        except httpx.HTTPError as exc:
            drops += 1
            if drops > 5:
                raise CliError(EXIT_UNREACHABLE, f"the event stream of {task_id} at {api.url} keeps breaking "
                                                 f"({exc})") from exc
            time.sleep(min(5.0, 0.5 * drops))


def _events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """text/event-stream lines -> events ({id, event, data}); comments (heartbeats) and retry: skipped."""
    event: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield {**event, "data": "\n".join(data), "event": event.get("event", "message")}
            event, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            event[name] = value


class Progress:
    """What following shows: one live line on a terminal, a line a change otherwise."""

    def __init__(self, out: IO[str], live: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.live, self.clock = out, live, clock
        self.start = clock()
        self.frame = 0
        self.drawn = False

    def show(self, task: Mapping[str, Any]) -> None:
        """Show one state of the task."""
        elapsed = self.clock() - self.start
        words = [str(task.get("task_id")), str(task.get("phase")), f"{elapsed:.1f}s"]
        if task.get("message"):
            words.append(str(task["message"]))
        line = "  ".join(words)
        if self.live:
            mark = "✓" if task.get("status") == "completed" else "✗" if _finished(task) else SPINNER[self.frame]
            self.frame = (self.frame + 1) % len(SPINNER)
            self.out.write(f"\r\x1b[2K{mark} {printable(line)[:200]}")
            self.drawn = True
            if _finished(task):
                self.out.write("\n")
                self.drawn = False
        else:
            self.out.write(printable(line) + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the live line, if one is drawn."""
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


def printable(text: str, *, lines: bool = False) -> str:
    """No terminal control characters from the API's text (a prompt or a message) reach the screen;
    `lines` keeps the line breaks of a generated text."""
    return "".join(c if c.isprintable() or (lines and c == "\n") else " " for c in text)


def wait(api: Api, task_id: str, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Follow the task with a progress display; its last state."""
    task: dict[str, Any] = {}
    try:
        for task in follow(api, task_id, timeout=args.timeout):
            progress.show(task)
    finally:
        progress.close()
    return task


# --- output ---------------------------------------------------------------------------------------


def age(created: Any) -> str:
    """How long ago an RFC 3339 time was, the way kubectl shows an age (5s, 3m, 2h, 4d); - if unreadable."""
    from datetime import UTC, datetime
    try:
        then = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def text_table(rows: list[list[str]]) -> str:
    """Rows as columns padded to their widest cell (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def render(data: Any, output: str, *, kind: str) -> str:
    """A task, a page of tasks or a deletion as table, json or yaml."""
    if output == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if output == "yaml":
        import yaml
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True)).rstrip()
    if kind == "page":
        rows = [["TASK_ID", "TYPE", "PHASE", "MODEL", "USER", "AGE"]]
        rows += [[str(t.get("task_id")), str(t.get("type")), str(t.get("phase")), str(t.get("model")),
                  str(t.get("user_id")), age(t.get("created_at"))] for t in data.get("tasks") or []]
        shown = len(rows) - 1
        footer = f"{shown} of {data.get('total')} (offset {data.get('offset', 0)})"
        return text_table([[printable(cell) for cell in row] for row in rows]) + "\n" + footer
    if kind == "task":
        fields = [("task_id", data.get("task_id")), ("type", data.get("type")),
                  ("status", f"{data.get('status')} ({data.get('phase')}"
                             + (f", {data.get('reason')}" if data.get("reason") else "") + ")"),
                  ("model", f"{data.get('provider')}/{data.get('model')}"), ("user", data.get("user_id")),
                  ("prompt", data.get("prompt")), ("message", data.get("message")),
                  ("attempts", data.get("attempts")), ("cost", _cost_line(data.get("cost"))),
                  ("created", data.get("created_at")), ("completed", data.get("completed_at"))]
        result = data.get("result") or {}
        for artifact in result.get("artifacts") or []:
            fields.append(("file", f"{artifact.get('name')} ({artifact.get('mime_type')}, "
                                   f"{artifact.get('size_bytes')} bytes)"))
        if result.get("text_result"):
            fields.append(("text", result["text_result"]))
        width = max(len(k) for k, _ in fields)
        return "\n".join(f"{k + ':':<{width + 1}} {printable(str(v), lines=k == 'text')}" for k, v in fields
                         if v not in (None, ""))
    return printable(" ".join(f"{k}={v}" for k, v in (data or {}).items()))


def _cost_line(cost: Any) -> str | None:
    """What a task cost, e.g. "0.4 CNY" (each currency's total after charges in two; docs/pricing.md)."""
    if not isinstance(cost, dict):
        return None
    totals = [f"{t.get('amount')} {t.get('currency')}" for t in cost.get("totals") or [] if isinstance(t, dict)]
    return " + ".join(totals) or None


# --- the commands ---------------------------------------------------------------------------------


def _value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true, lists), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_create(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Create a task; with --wait, follow it and exit by its outcome."""
    body: dict[str, Any] = {"prompt": args.prompt, "provider": args.provider, "model": args.model}
    for name in ("user_id", "priority", "size", "aspect_ratio", "duration", "max_tokens", "seed", "n"):
        if getattr(args, name, None) is not None:
            body[name] = getattr(args, name)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(EXIT_USAGE, f"--set takes FIELD=VALUE (e.g. --set temperature=0.7), got {item!r}")
        body[key] = _value(value)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    task = api.call("POST", f"{PREFIX}/{args.type}/task", json=body, headers=headers)
    if not args.wait:
        out.write(render(task, args.output, kind="task") + "\n")
        return EXIT_OK
    if args.output == "table":
        err.write(f"created {task.get('task_id')}\n")
    return _report(api, wait(api, str(task.get("task_id")), args, _progress(err)), args, out)


def _report(api: Api, task: Mapping[str, Any], args: argparse.Namespace, out: IO[str]) -> int:
    out.write(render(dict(task), args.output, kind="task") + "\n")
    return OUTCOME.get(str(task.get("status")), EXIT_OK)


def _progress(err: IO[str]) -> Progress:
    return Progress(err, live=err.isatty() and os.environ.get("TERM") != "dumb")


def cmd_get(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print a task."""
    out.write(render(api.call("GET", f"{PREFIX}/task/result/{args.task_id}"), args.output, kind="task") + "\n")
    return EXIT_OK


def cmd_wait(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Follow a task with a progress display; print it at the end; exit by its outcome."""
    return _report(api, wait(api, args.task_id, args, _progress(err)), args, out)


def cmd_watch(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Every change on stdout, one line (or JSON object) a change. One task: until it ends, the exit
    code its outcome's. No task: every change of the caller's tasks (an admin's: --user-id's, or
    everyone's) until --timeout or Ctrl-C."""
    def show(task: Mapping[str, Any]) -> None:
        if args.output == "table":
            out.write(printable(f"{task.get('task_id')}  {task.get('phase')}  {task.get('message') or ''}".rstrip())
                      + "\n")
        else:
            out.write(json.dumps(task, ensure_ascii=False) + "\n")
        out.flush()
    if args.task_id is None:
        return _watch_all(api, args, show)
    task: dict[str, Any] = {}
    for task in follow(api, args.task_id, timeout=args.timeout):
        show(task)
    return OUTCOME.get(str(task.get("status")), EXIT_OK)


def _watch_all(api: Api, args: argparse.Namespace, show: Callable[[Mapping[str, Any]], None]) -> int:
    start, event_id, drops = time.monotonic(), None, 0
    params = {"user_id": args.user_id} if args.user_id else {}
    while True:
        remaining = None if args.timeout is None else args.timeout - (time.monotonic() - start)
        if remaining is not None and remaining <= 0:
            return EXIT_OK
        headers = {**api.headers, "Accept": "text/event-stream", **({"Last-Event-ID": event_id} if event_id else {})}
        read = 60.0 if remaining is None else max(0.1, min(60.0, remaining))
        try:
            with api.http.stream("GET", f"{api.url}{PREFIX}/events", params=params, headers=headers,
                                 timeout=httpx.Timeout(30, read=read)) as response:
                if response.status_code != 200:
                    raise api.refused(response)
                drops = 0
                for event in _events(response.iter_lines()):
                    event_id = event.get("id") or event_id
                    if event.get("event") in ("task", "deleted"):
                        data = json.loads(event["data"])
                        if isinstance(data, dict):
                            show(data if event["event"] == "task" else {**data, "phase": "<deleted>"})
        except httpx.ReadTimeout:
            continue
        except httpx.HTTPError as exc:
            drops += 1
            if drops > 5:
                raise CliError(EXIT_UNREACHABLE, f"the event stream at {api.url} keeps breaking ({exc})") from exc
            time.sleep(min(5.0, 0.5 * drops))


def cmd_list(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print a page of tasks."""
    query = {k: v for k, v in {"user_id": args.user_id, "type": args.type, "status": args.status,
                               "limit": args.limit, "offset": args.offset}.items() if v is not None}
    out.write(render(api.call("GET", f"{PREFIX}/tasks", params=query), args.output, kind="page") + "\n")
    return EXIT_OK


def cmd_cancel(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Ask for a task to be cancelled."""
    out.write(render(api.call("POST", f"{PREFIX}/task/{args.task_id}/cancel"), args.output, kind="task") + "\n")
    return EXIT_OK


def cmd_delete(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Delete a task."""
    out.write(render(api.call("DELETE", f"{PREFIX}/task/{args.task_id}"), args.output, kind="deleted") + "\n")
    return EXIT_OK


def cmd_download(api: Api, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Every stored file of the task into --dir, each checked against its sha256 before it gets its name."""
    task = api.call("GET", f"{PREFIX}/task/result/{args.task_id}")
    artifacts = (task.get("result") or {}).get("artifacts") or []
    if not artifacts:
        raise CliError(EXIT_REFUSED, f"task {args.task_id} has no stored files (it is {task.get('phase')})")
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        name = posixpath.basename(str(artifact.get("name") or ""))
        if not name or name in (".", "..") or name != artifact.get("name"):
            raise CliError(EXIT_REFUSED, f"the API named a file {artifact.get('name')!r}; not a plain file name")
        target = folder / f"{args.task_id}-{name}" if args.prefix else folder / name
        part = target.with_name(target.name + ".part")
        try:
            with part.open("wb") as f:
                digest = api.download(str(artifact.get("url")), f)
            expected = artifact.get("sha256")
            if expected and digest != expected:
                raise CliError(EXIT_CORRUPT, f"{name}: sha256 {digest} does not match the task's {expected}; "
                                             "nothing was kept")
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
        out.write(f"{target}  {artifact.get('size_bytes')} bytes  sha256 {digest}"
                  f"{' (checked)' if artifact.get('sha256') else ' (no checksum given)'}\n")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Api, argparse.Namespace, IO[str], IO[str]], int]] = {
    "create": cmd_create, "get": cmd_get, "wait": cmd_wait, "watch": cmd_watch, "list": cmd_list,
    "cancel": cmd_cancel, "delete": cmd_delete, "download": cmd_download,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise CliError(EXIT_USAGE, f"{self.prog}: {message}\n(see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    """The command line of `gentask task`."""
    epilog = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    top = _Parser(prog="gentask task", description="Tasks over the gentask REST API.", epilog=epilog,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _Parser(add_help=False)
    common.add_argument("--url", default=os.environ.get("GENTASK_URL", DEFAULT_URL),
                        help=f"the API's base URL (GENTASK_URL; default {DEFAULT_URL})")
    common.add_argument("--api-key", default=os.environ.get("GENTASK_API_KEY"),
                        help="the API key (GENTASK_API_KEY; prefer the variable: flags show in ps)")
    common.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    common.add_argument("--request-timeout", type=float, default=30.0, help="seconds for one request")
    follow_args = _Parser(add_help=False)
    follow_args.add_argument("--timeout", type=float, default=None,
                             help="give up following after this many seconds (exit 6); the task goes on")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    create = sub.add_parser("create", parents=[common, follow_args], help="create a task (--wait: follow it)")
    create.add_argument("type", choices=("image", "video", "text"))
    create.add_argument("prompt")
    create.add_argument("--provider", required=True, help="see GET /api/v1/ai/models")
    create.add_argument("--model", required=True)
    create.add_argument("--user-id")
    create.add_argument("--priority", choices=("critical", "default", "low"))
    create.add_argument("--size", help="image: WIDTHxHEIGHT")
    create.add_argument("--n", type=int, help="image: how many")
    create.add_argument("--seed", type=int)
    create.add_argument("--aspect-ratio", help="video: e.g. 16:9")
    create.add_argument("--duration", type=int, help="video: seconds")
    create.add_argument("--max-tokens", type=int, help="text: token limit")
    create.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="any other request field (JSON values: --set temperature=0.7); repeatable")
    create.add_argument("--idempotency-key", help="the same key again returns the first task, not a new one")
    create.add_argument("--wait", action="store_true", help="follow the task until it ends; exit by its outcome")
    watch = sub.add_parser("watch", parents=[common, follow_args],
                           help="print every change of a task until it ends; without a task, of all yours")
    watch.add_argument("task_id", nargs="?")
    watch.add_argument("--user-id", help="without a task, an admin key: this user's tasks only")
    for name, text, extra in (("get", "a task's status and result", []),
                              ("wait", "follow a task until it ends; exit by its outcome", [follow_args]),
                              ("cancel", "cancel a task that has not finished", []),
                              ("delete", "delete a task (a running one is stopped)", []),
                              ("download", "download a task's files, each checked against its sha256", [])):
        p = sub.add_parser(name, parents=[common, *extra], help=text)
        p.add_argument("task_id")
        if name == "download":
            p.add_argument("--dir", default=".", help="where to write the files (default: here)")
            p.add_argument("--prefix", action="store_true", help="name files TASK_ID-NAME")
    listing = sub.add_parser("list", parents=[common], help="a page of tasks, newest first")
    listing.add_argument("--user-id")
    listing.add_argument("--type", choices=("image", "video", "text"))
    listing.add_argument("--status", choices=("pending", "processing", "completed", "failed", "cancelled"))
    listing.add_argument("--limit", type=int)
    listing.add_argument("--offset", type=int)
    return top


def main(argv: list[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run `gentask task ARGS`; returns the exit code (EXIT_CODES)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = parser().parse_args(argv)
    except CliError as exc:
        err.write(f"{exc}\n")
        return exc.code
    except SystemExit as exc:              # --help
        return int(exc.code or 0)
    api = None
    try:
        api = Api(args.url, args.api_key, timeout=args.request_timeout)
        return COMMANDS[args.command](api, args, out, err)
    except CliError as exc:
        err.write(f"gentask task {args.command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        err.write("\ninterrupted; the task goes on\n")
        return 130
    finally:
        if api is not None:
            api.close()
