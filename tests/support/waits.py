"""Waiting for the cluster in the integration and e2e tests, and saying why a wait failed.

Every wait of those suites goes through `wait_for` (or `wait_for_async`). Its budget follows
progress, not a fixed short deadline: it fails when nothing it watches has moved for `stall`
seconds, or when it has waited `cap` seconds in all, or shortly before pytest-timeout would kill
the test (so that the failure still carries its description instead of a stack dump). A slow
system that keeps moving passes; a stuck one fails as soon as it has been still for `stall`.

Moved means: the value the wait observes differs from the one before, or the `progress()` token
does (for a task: the resourceVersions of the task, its Job and its pods, and the size of the
pods' logs; see `task_progress`, `namespace_progress`). A failed wait says what it waited for,
the last value it saw and what `describe()` found; `describe_task` gathers a task's status, its
Job, its pods, the namespace's recent events, the nodes and the worker's last log lines, and
never raises: a diagnostic must not hide the failure it explains.

    status = wait_for(lambda: tasks.status(name), 90, what=f"task {name} to succeed",
                      until=lambda s: s.get("phase") == "Succeeded", **watching(cluster, ns, task=name))
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

MIN_STALL = 30.0        # the stall budget a legacy `timeout` gives at least
CAP_FACTOR = 5.0        # the overall cap, by default: CAP_FACTOR x the stall budget ...
MIN_CAP = 180.0         # ... and at least this
PROGRESS_EVERY = 1.0    # seconds between two samples of `progress()` (it may cost a few API calls)
PYTEST_MARGIN = 25.0    # a wait gives up this long before pytest-timeout would kill the test
DESCRIBE_SECONDS = 15.0  # what describing a task may take in all (each API call is bounded too)
VALUE_CHARS = 2000      # of the last value in a failure message
LOG_LINES = 30          # of each worker log
TRANSIENT_STATUSES = {0, 429, 500, 502, 503, 504}


class WaitFailed(AssertionError):
    """A wait gave up: `what` it waited for, the `last` value seen, `elapsed` seconds, `changes` seen."""

    def __init__(self, message: str, *, what: str, last: Any, elapsed: float, changes: int) -> None:
        super().__init__(message)
        self.what, self.last, self.elapsed, self.changes = what, last, elapsed, changes


class ObserveError:
    """What a poll saw when observing raised an error that `errors` calls transient."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.text = short_error(exc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObserveError) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"<error: {self.text}>"


def _is_api_exception(exc: BaseException) -> bool:
    try:
        from kubernetes.client.exceptions import ApiException
    except ImportError:  # pragma: no cover - the tests always have the kubernetes client
        return False
    return isinstance(exc, ApiException)


def short_error(exc: BaseException) -> str:
    if _is_api_exception(exc):
        return f"ApiException {getattr(exc, 'status', None)} {getattr(exc, 'reason', None)}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def transient(exc: BaseException) -> bool:
    """An error that says the system is busy or briefly away, not that it misbehaves: an API
    answer 429/5xx, a request without an answer, a connection refused or reset."""
    if _is_api_exception(exc):
        return getattr(exc, "status", None) in TRANSIENT_STATUSES
    try:
        import urllib3
        if isinstance(exc, urllib3.exceptions.HTTPError):
            return True
    except ImportError:  # pragma: no cover - the kubernetes client brings urllib3
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def time_left_in_test() -> float | None:
    """Seconds until pytest-timeout (signal method) interrupts the running test; None if no alarm is set."""
    try:
        left, _ = signal.getitimer(signal.ITIMER_REAL)
    except (AttributeError, OSError, ValueError):
        return None
    return left or None


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that refuse ==: compare what they look like
        return repr(a) == repr(b)


def _clip(value: Any, limit: int = VALUE_CHARS) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001
        text = f"<unprintable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class _Wait:
    """The budget and the bookkeeping of one wait; the loops below drive it."""

    def __init__(self, what: str, timeout: float | None, stall: float | None, cap: float | None, interval: float,
                 until: Callable[[Any], Any] | None, abort: Callable[[Any], Any] | None,
                 progress: Callable[[], Any] | None, describe: Callable[[], str] | None,
                 errors: Callable[[BaseException], bool] | None, clock: Callable[[], float]) -> None:
        if stall is None:
            stall = max(float(timeout), MIN_STALL) if timeout is not None else 60.0
        if cap is None:
            cap = max(CAP_FACTOR * stall, MIN_CAP)
        cap = max(cap, stall)
        self.what, self.stall, self.cap, self.interval = what, stall, cap, interval
        self.until, self.abort, self.progress, self.describe, self.errors = until, abort, progress, describe, errors
        self.clock = clock
        self.start = self.last_change = clock()
        self.deadline, self.by_pytest = self.start + cap, False
        left = time_left_in_test()
        if left is not None:
            mine = max(left - PYTEST_MARGIN, left * 0.5)
            if self.start + mine < self.deadline:
                self.deadline, self.by_pytest = self.start + mine, True
        self.polls = self.changes = 0
        self.last: Any = None
        self.token: Any = None
        self.token_at: float | None = None

    # one poll -------------------------------------------------------------------------------

    def seen(self, value: Any) -> bool:
        """Record one observed value; True when the wait is over."""
        if self.polls and not _same(value, self.last):
            self.changes += 1
            self.last_change = self.clock()
        self.polls += 1
        self.last = value
        if isinstance(value, ObserveError):
            return False
        done = self.until(value) if self.until is not None else value
        if done:
            return True
        if self.abort is not None:
            why = self.abort(value)
            if why:
                self.fail(f"gave up waiting for {self.what}: {why}")
        return False

    def failed_observing(self, exc: Exception) -> Any:
        if self.errors is not None and self.errors(exc):
            return ObserveError(exc)
        raise exc

    def sample_progress(self) -> None:
        if self.progress is None:
            return
        now = self.clock()
        if self.token_at is not None and now - self.token_at < max(PROGRESS_EVERY, self.interval):
            return
        try:
            token = self.progress()
        except Exception:  # noqa: BLE001 - a probe that cannot look shows no progress, it fails nothing
            return
        if self.token_at is not None and not _same(token, self.token):
            self.changes += 1
            self.last_change = self.clock()
        self.token, self.token_at = token, now

    def check(self, poll_started: float) -> float:
        """Raise when the budget is spent; else the seconds to sleep before the next poll (what the
        poll took is taken from the interval: a slow probe does not slow the wait down)."""
        now = self.clock()
        quiet = now - self.last_change
        if quiet >= self.stall:
            self.fail(f"timed out waiting for {self.what}: nothing it watches moved for {quiet:.0f}s "
                      f"(the stall budget: {self.stall:.0f}s)")
        if now >= self.deadline:
            why = ("pytest-timeout would stop the test soon" if self.by_pytest
                   else f"the overall cap: {self.cap:.0f}s")
            self.fail(f"timed out waiting for {self.what}: not done after {now - self.start:.0f}s in all "
                      f"though it kept moving ({why})")
        return max(0.0, min(self.interval - (now - poll_started), self.last_change + self.stall - now,
                            self.deadline - now))

    def fail(self, headline: str) -> None:
        now = self.clock()
        lines = [headline,
                 f"waited {now - self.start:.1f}s, {self.polls} poll(s), {self.changes} change(s) seen, "
                 f"the last {now - self.last_change:.1f}s ago; now {time.strftime('%H:%M:%S', time.gmtime())} UTC",
                 f"last value: {_clip(self.last)}"]
        if self.describe is not None:
            try:
                text = self.describe()
            except Exception as exc:  # noqa: BLE001 - the description must not replace the failure
                text = f"(describing failed: {short_error(exc)})"
            if text:
                lines += ["--- what things looked like ---", str(text)]
        raise WaitFailed("\n".join(lines), what=self.what, last=self.last, elapsed=now - self.start,
                         changes=self.changes)


def wait_for(observe: Callable[[], Any], timeout: float | None = None, interval: float = 0.2,
             what: str = "condition", *, until: Callable[[Any], Any] | None = None, stall: float | None = None,
             cap: float | None = None, progress: Callable[[], Any] | None = None,
             describe: Callable[[], str] | None = None, abort: Callable[[Any], Any] | None = None,
             errors: Callable[[BaseException], bool] | None = transient,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] = time.sleep) -> Any:
    """Poll `observe()` every `interval` seconds until the wait is over, and return the value that ended it.

    Over: `until(value)` is truthy (without `until`: the value itself is). Fails with `WaitFailed`
    (an AssertionError) when nothing moved for `stall` seconds, after `cap` seconds in all, when
    `abort(value)` returns a reason, or before pytest-timeout would stop the test. `timeout` is
    the old signature's deadline: it becomes the stall budget (at least MIN_STALL). `progress()`
    returns a token whose change counts as progress; `describe()` adds what things looked like to
    the failure. Errors of `observe` for which `errors(exc)` is true (by default: transient API
    errors) count as a value that is not done; others propagate.
    """
    w = _Wait(what, timeout, stall, cap, interval, until, abort, progress, describe, errors, clock)
    while True:
        started = clock()
        try:
            value = observe()
        except Exception as exc:  # noqa: BLE001 - failed_observing re-raises what is not transient
            value = w.failed_observing(exc)
        if w.seen(value):
            return value
        w.sample_progress()
        sleep(w.check(started))


async def wait_for_async(observe: Callable[[], Any | Awaitable[Any]], timeout: float | None = None,
                         interval: float = 0.05, what: str = "condition", *,
                         until: Callable[[Any], Any] | None = None, stall: float | None = None,
                         cap: float | None = None, progress: Callable[[], Any] | None = None,
                         describe: Callable[[], str] | None = None, abort: Callable[[Any], Any] | None = None,
                         errors: Callable[[BaseException], bool] | None = transient,
                         clock: Callable[[], float] = time.monotonic) -> Any:
    """`wait_for` inside an event loop: the loop runs while it sleeps; `observe` may be a coroutine function."""
    w = _Wait(what, timeout, stall, cap, interval, until, abort, progress, describe, errors, clock)
    while True:
        started = clock()
        try:
            value = observe()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001
            value = w.failed_observing(exc)
        if w.seen(value):
            return value
        w.sample_progress()
        await asyncio.sleep(w.check(started))


# --- progress tokens -----------------------------------------------------------------------------

def _rv(obj: Any) -> Any:
    meta = obj.get("metadata", {}) if isinstance(obj, dict) else obj.metadata
    return meta.get("resourceVersion") if isinstance(meta, dict) else meta.resource_version


def _log_sizes(cluster: Any, namespace: str, pods: Iterable[str]) -> tuple:
    root = _pods_root(cluster)
    if root is None:
        return ()
    sizes = []
    for pod in pods:
        for folder in root.glob(f"{namespace}_{pod}_*"):
            sizes += [(f.name, f.stat().st_size) for f in folder.glob("*.log")]
    return tuple(sorted(sizes))


def task_progress(cluster: Any, namespace: str, name: str) -> Callable[[], tuple]:
    """A token that changes when the task, its Job or its pods change, or a pod writes to its log."""
    from kubernetes import client

    from gentask.domain import GROUP, PLURAL, VERSION

    def token() -> tuple:
        custom, batch, core = (client.CustomObjectsApi(cluster.api), client.BatchV1Api(cluster.api),
                               client.CoreV1Api(cluster.api))
        try:
            task_rv = _rv(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                              _request_timeout=10))
        except Exception as exc:  # noqa: BLE001 - gone or unreadable is a state too
            task_rv = short_error(exc)
        jobs = batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}", _request_timeout=10).items
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}", _request_timeout=10).items
        return (task_rv, tuple((j.metadata.uid, _rv(j)) for j in jobs),
                tuple(sorted((p.metadata.name, _rv(p)) for p in pods)),
                _log_sizes(cluster, namespace, [p.metadata.name for p in pods]))
    return token


def namespace_progress(cluster: Any, namespace: str) -> Callable[[], tuple]:
    """A token that changes when a pod, Job or GenerationTask of the namespace changes or a pod logs."""
    from kubernetes import client

    from gentask.domain import GROUP, PLURAL, VERSION

    def token() -> tuple:
        core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
        pods = core.list_namespaced_pod(namespace, _request_timeout=10).items
        jobs = batch.list_namespaced_job(namespace, _request_timeout=10).items
        try:
            tasks = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _request_timeout=10)["items"]
        except Exception:  # noqa: BLE001 - no CRD (yet): pods and Jobs say enough
            tasks = []
        return (tuple(sorted((p.metadata.name, _rv(p)) for p in pods)),
                tuple(sorted((j.metadata.name, _rv(j)) for j in jobs)),
                tuple(sorted((t["metadata"]["name"], _rv(t)) for t in tasks)),
                _log_sizes(cluster, namespace, [p.metadata.name for p in pods]))
    return token


def file_progress(*paths: Path) -> Callable[[], tuple]:
    """A token that changes when one of the files grows (a process's log)."""
    def token() -> tuple:
        return tuple(p.stat().st_size if p.exists() else -1 for p in paths)
    return token


def any_progress(*tokens: Callable[[], Any]) -> Callable[[], tuple]:
    """One token made of several: progress when any of them moves."""
    def token() -> tuple:
        out = []
        for t in tokens:
            try:
                out.append(t())
            except Exception as exc:  # noqa: BLE001
                out.append(short_error(exc))
        return tuple(out)
    return token


def watching(cluster: Any, namespace: str, *, task: str | None = None, logs: Sequence[Path] = (),
             extra: Callable[[], str] | None = None) -> dict[str, Any]:
    """`progress` and `describe` for a wait about one task (task=name) or about a namespace; splat it
    into wait_for: `wait_for(..., **watching(cluster, ns, task=name))`. `logs`: files of processes
    outside the cluster (an operator's log) that count as progress when they grow and that the
    description quotes; `extra()`: more description."""
    progress = task_progress(cluster, namespace, task) if task is not None else namespace_progress(cluster, namespace)
    if logs:
        progress = any_progress(progress, file_progress(*logs))

    def describe() -> str:
        if task is not None:
            return describe_task(cluster, namespace, task, logs=logs) + _extra(extra)
        return describe_namespace(cluster, namespace, logs=logs) + _extra(extra)
    return {"progress": progress, "describe": describe}


def _extra(extra: Callable[[], str] | None) -> str:
    if extra is None:
        return ""
    try:
        return "\n" + extra()
    except Exception as exc:  # noqa: BLE001
        return f"\n(describing more failed: {short_error(exc)})"


# --- descriptions --------------------------------------------------------------------------------

class _Budget:
    """Bounds what describing may take: each API call gets at most what is left."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def request(self) -> float:
        return max(1.0, min(5.0, self.until - time.monotonic()))

    @property
    def spent(self) -> bool:
        return time.monotonic() >= self.until


def _section(title: str, budget: _Budget, build: Callable[[], list[str] | str]) -> str:
    if budget.spent:
        return f"{title}: (skipped: describing took too long already)"
    try:
        body = build()
    except Exception as exc:  # noqa: BLE001 - one section that cannot be read leaves the others
        return f"{title}: (could not read: {short_error(exc)})"
    if isinstance(body, str):
        return f"{title}: {body}"
    return "\n".join([f"{title}:"] + [f"  {line}" for line in body] if body else [f"{title}: (none)"])


def _ts(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.strftime("%H:%M:%S")
    return str(value)


def _one_line(text: Any, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit] + "..."


def _task_lines(cluster: Any, namespace: str, name: str, budget: _Budget) -> list[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from gentask.domain import GROUP, PLURAL, VERSION
    try:
        obj = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=budget.request())
    except ApiException as exc:
        if exc.status == 404:
            return ["(not found: deleted, or never created)"]
        raise
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    lines = [f"phase={status.get('phase')} reason={status.get('reason')} attempts={status.get('attempts')} "
             f"jobName={status.get('jobName')} workerPod={status.get('workerPod')} "
             f"providerTaskID={status.get('providerTaskID') or '-'}",
             f"resourceVersion={meta.get('resourceVersion')} generation={meta.get('generation')} "
             f"observedGeneration={status.get('observedGeneration')} created={meta.get('creationTimestamp')} "
             f"deletion={meta.get('deletionTimestamp') or '-'} finalizers={meta.get('finalizers') or []}",
             f"spec: type={spec.get('type')} provider={spec.get('provider')} model={spec.get('model')} "
             f"priority={spec.get('priority')} retries={spec.get('retries')} "
             f"timeoutSeconds={spec.get('timeoutSeconds')} cancel={spec.get('cancel')}"]
    if status.get("message"):
        lines.append(f"message: {_one_line(status['message'], 800)}")
    for c in status.get("conditions") or []:
        lines.append(f"condition {c.get('type')}={c.get('status')} reason={c.get('reason')} "
                     f"at={c.get('lastTransitionTime')}: {_one_line(c.get('message') or '')}")
    rest = {k: v for k, v in status.items() if k not in {
        "phase", "reason", "attempts", "jobName", "workerPod", "providerTaskID", "observedGeneration", "message",
        "conditions"}}
    if rest:
        lines.append("more status: " + _one_line(json.dumps(rest, default=str, sort_keys=True), 1200))
    return lines


def _job_lines(job: Any) -> list[str]:
    st, spec = job.status, job.spec
    lines = [f"Job {job.metadata.name}: active={st.active} ready={st.ready} succeeded={st.succeeded} "
             f"failed={st.failed} terminating={getattr(st, 'terminating', None)} start={_ts(st.start_time)} "
             f"completion={_ts(st.completion_time)} backoffLimit={spec.backoff_limit} "
             f"activeDeadlineSeconds={spec.active_deadline_seconds} suspend={spec.suspend} "
             f"deletion={_ts(job.metadata.deletion_timestamp)}"]
    for c in st.conditions or []:
        lines.append(f"  condition {c.type}={c.status} reason={c.reason}: {_one_line(c.message or '')}")
    return lines


def _jobs(cluster: Any, namespace: str, budget: _Budget, name: str | None = None) -> list[str]:
    from kubernetes import client
    batch = client.BatchV1Api(cluster.api)
    selector = {"field_selector": f"metadata.name={name}"} if name else {}
    jobs = batch.list_namespaced_job(namespace, _request_timeout=budget.request(), **selector).items
    if not jobs and name:
        return [f"(no Job {name})"]
    return [line for j in jobs[:20] for line in _job_lines(j)]


def _container_line(cs: Any) -> str:
    state, text = cs.state, "unknown"
    if state is not None and state.waiting is not None:
        text = f"waiting {state.waiting.reason}: {_one_line(state.waiting.message or '', 300)}"
    elif state is not None and state.running is not None:
        text = f"running since {_ts(state.running.started_at)}"
    elif state is not None and state.terminated is not None:
        t = state.terminated
        text = (f"terminated exit={t.exit_code} reason={t.reason} {_ts(t.started_at)}-{_ts(t.finished_at)}"
                + (f": {_one_line(t.message, 300)}" if t.message else ""))
    last = cs.last_state.terminated if cs.last_state is not None else None
    before = f" (before: exit={last.exit_code} reason={last.reason})" if last is not None else ""
    return f"container {cs.name}: {text} restarts={cs.restart_count}{before}"


def _pod_lines(pod: Any) -> list[str]:
    st = pod.status
    lines = [f"Pod {pod.metadata.name}: phase={st.phase} node={pod.spec.node_name} "
             f"reason={st.reason or '-'} started={_ts(st.start_time)} "
             f"deletion={_ts(pod.metadata.deletion_timestamp)}"
             + (f" message={_one_line(st.message, 300)}" if st.message else "")]
    for c in st.conditions or []:
        if c.status != "True" or c.reason:
            lines.append(f"  condition {c.type}={c.status} reason={c.reason}: {_one_line(c.message or '', 300)}")
    for cs in (st.init_container_statuses or []) + (st.container_statuses or []):
        lines.append("  " + _container_line(cs))
    return lines


def _pods_root(cluster: Any) -> Path | None:
    kubeconfig = getattr(cluster, "kubeconfig", None)
    if kubeconfig is None:
        return None
    root = Path(kubeconfig).parent / "node" / "pods"
    return root if root.is_dir() else None


def pod_log_tail(cluster: Any, namespace: str, pod: str, container: str = "main", lines: int = LOG_LINES) -> str:
    """The last lines a pod's container wrote: the process node's file, else `kubectl logs`."""
    root = _pods_root(cluster)
    if root is not None and any(root.glob(f"{namespace}_{pod}_*")):
        text = cluster.pod_log(namespace, pod, container)
    else:
        proc = cluster.kubectl("logs", "-n", namespace, pod, "-c", container, f"--tail={lines}",
                               "--request-timeout=5s")
        text = proc.stdout if proc.returncode == 0 else f"(kubectl logs: {_one_line(proc.stderr, 300)})"
    tail = text.splitlines()[-lines:]
    return "\n".join(line if len(line) <= 500 else line[:500] + "..." for line in tail)


def _pods(cluster: Any, namespace: str, budget: _Budget, selector: str | None = None,
          logs: bool = False) -> list[str]:
    from kubernetes import client
    args = {"label_selector": selector} if selector else {}
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, _request_timeout=budget.request(),
                                                             **args).items
    pods.sort(key=lambda p: p.metadata.creation_timestamp or dt.datetime.min.replace(tzinfo=dt.UTC))
    out: list[str] = []
    for pod in pods[-20:]:
        out += _pod_lines(pod)
        if not logs:
            continue
        for container in pod.spec.containers:
            if budget.spent:
                out.append(f"  log of {container.name}: (skipped: describing took too long already)")
                continue
            try:
                tail = pod_log_tail(cluster, namespace, pod.metadata.name, container.name)
            except Exception as exc:  # noqa: BLE001
                tail = f"(could not read: {short_error(exc)})"
            out.append(f"  last lines of {container.name}'s log:" + ("" if tail else " (empty)"))
            out += [f"    | {line}" for line in tail.splitlines()]
    return out if out else [f"(no pods{' with ' + selector if selector else ''})"]


def _event_time(e: Any) -> dt.datetime:
    for value in (e.last_timestamp, e.event_time, e.first_timestamp, e.metadata.creation_timestamp):
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.min.replace(tzinfo=dt.UTC)


def _events(cluster: Any, namespace: str, budget: _Budget, limit: int = 25) -> list[str]:
    from kubernetes import client
    events = client.CoreV1Api(cluster.api).list_namespaced_event(namespace, _request_timeout=budget.request()).items
    events.sort(key=_event_time)
    return [f"{_ts(_event_time(e))} {e.type} {e.reason} {e.involved_object.kind}/{e.involved_object.name}: "
            f"{_one_line(e.message or '', 300)}" + (f" (x{e.count})" if e.count and e.count > 1 else "")
            for e in events[-limit:]]


def _nodes(cluster: Any, budget: _Budget) -> list[str]:
    from kubernetes import client
    out = []
    for n in client.CoreV1Api(cluster.api).list_node(_request_timeout=budget.request()).items:
        ready = next((c.status for c in n.status.conditions or [] if c.type == "Ready"), "?")
        taints = [f"{t.key}={t.value}:{t.effect}" for t in n.spec.taints or []]
        out.append(f"{n.metadata.name}: Ready={ready} unschedulable={bool(n.spec.unschedulable)} taints={taints}")
    return out


def _routine(line: str) -> bool:
    """Kopf's "Handler 'x' succeeded." lines: one per event, they say nothing about what went wrong."""
    return "Handler '" in line and "succeeded" in line


def _log_lines(log: Path, name: str | None, lines: int = 12) -> list[str]:
    if not Path(log).exists():
        return [f"({log} does not exist)"]
    text = Path(log).read_text(errors="replace").splitlines()
    out = []
    if name:
        mine = [line for line in text if name in line and not _routine(line)][-lines:]
        out += [f"lines naming {name}:"] + [f"  | {_one_line(line, 400)}" for line in mine]
    out += ["last lines:"] + [f"  | {_one_line(line, 400)}" for line in [t for t in text if not _routine(t)][-8:]]
    return out


def describe_task(cluster: Any, namespace: str, name: str, *, logs: Sequence[Path] = ()) -> str:
    """What a task and what runs it look like now: its status (phase, reason, message, conditions),
    its Job, its pods with their container states and last log lines, the namespace's recent
    events, the nodes, and the lines of `logs` (an operator's log) that name it. Never raises."""
    try:
        budget = _Budget(DESCRIBE_SECONDS)
        parts = [
            _section(f"task {namespace}/{name}", budget, lambda: _task_lines(cluster, namespace, name, budget)),
            _section("its Job", budget, lambda: _jobs(cluster, namespace, budget, name)),
            _section("its pods", budget, lambda: _pods(cluster, namespace, budget, f"job-name={name}", logs=True)),
            _section(f"recent events in {namespace}", budget, lambda: _events(cluster, namespace, budget)),
            _section("nodes", budget, lambda: _nodes(cluster, budget)),
        ]
        for log in logs:
            parts.append(_section(f"log {log}", budget, lambda log=log: _log_lines(log, name)))
        return "\n".join(parts)
    except Exception as exc:  # noqa: BLE001 - a description must never hide the failure it explains
        return f"(describing task {namespace}/{name} failed: {short_error(exc)})"


def _task_table(cluster: Any, namespace: str, budget: _Budget, limit: int = 15) -> list[str]:
    """The namespace's tasks grouped by what their status says (phase, reason, message), a few names each."""
    from kubernetes import client

    from gentask.domain import GROUP, PLURAL, VERSION
    items = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _request_timeout=budget.request())["items"]
    groups: dict[tuple[str, str, str], list[str]] = {}
    for t in items:
        st = t.get("status") or {}
        key = (str(st.get("phase")), str(st.get("reason")), _one_line(st.get("message") or "", 160))
        groups.setdefault(key, []).append(t["metadata"]["name"])
    rows = []
    for (phase, reason, message), names in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:limit]:
        some = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        rows.append(f"{len(names)} x phase={phase} reason={reason}: {some}" + (f" - {message}" if message else ""))
    if len(groups) > limit:
        rows.append(f"... and {len(groups) - limit} more kinds of status")
    return rows


def describe_namespace(cluster: Any, namespace: str, *, pod_logs: bool = True, logs: Sequence[Path] = ()) -> str:
    """What is in a namespace now: its tasks, Jobs, pods (with their last log lines unless
    pod_logs=False), recent events, the nodes and the last lines of `logs`. Never raises."""
    try:
        budget = _Budget(DESCRIBE_SECONDS)
        parts = [
            _section(f"tasks in {namespace}", budget, lambda: _task_table(cluster, namespace, budget)),
            _section(f"Jobs in {namespace}", budget, lambda: _jobs(cluster, namespace, budget)),
            _section(f"pods in {namespace}", budget, lambda: _pods(cluster, namespace, budget, logs=pod_logs)),
            _section(f"recent events in {namespace}", budget, lambda: _events(cluster, namespace, budget)),
            _section("nodes", budget, lambda: _nodes(cluster, budget)),
        ]
        for log in logs:
            parts.append(_section(f"log {log}", budget, lambda log=log: _log_lines(log, None)))
        return "\n".join(parts)
    except Exception as exc:  # noqa: BLE001
        return f"(describing namespace {namespace} failed: {short_error(exc)})"


def describe_pods(cluster: Any, namespace: str, selector: str | None = None, *, logs: bool = True) -> str:
    """The pods of a namespace (or those a label selector picks), their states and last log lines. Never raises."""
    try:
        budget = _Budget(DESCRIBE_SECONDS)
        return _section(f"pods in {namespace}" + (f" ({selector})" if selector else ""), budget,
                        lambda: _pods(cluster, namespace, budget, selector, logs=logs))
    except Exception as exc:  # noqa: BLE001
        return f"(describing pods in {namespace} failed: {short_error(exc)})"
