"""Prometheus metrics of the API, in the text exposition format, without a client library.

Labels are bounded: the route template (never a task id), the method and the status code.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(**labels: object) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels.items())
    return "{" + inner + "}"


class Metrics:
    """The API's counters, latency histograms and gauges, rendered for Prometheus."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.created: dict[str, int] = defaultdict(int)
        self.rejected: dict[str, int] = defaultdict(int)
        self.mirror_dropped = 0
        self.gauges: dict[str, Callable[[], float]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}     # name -> (help, read)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its time."""
        self.requests[(method, route, status)] += 1
        buckets = self.latency.setdefault(route, [0] * len(BUCKETS))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
                break
        self.latency_sum[route] += seconds
        self.latency_count[route] += 1

    def render(self) -> str:
        """Everything in the Prometheus text exposition format."""
        out = ["# HELP gentask_api_requests_total HTTP requests answered, by route template and status.",
               "# TYPE gentask_api_requests_total counter"]
        for (method, route, status), n in sorted(self.requests.items()):
            out.append(f"gentask_api_requests_total{_labels(method=method, route=route, status=status)} {n}")
        out += ["# HELP gentask_api_request_duration_seconds Time to answer, by route template.",
                "# TYPE gentask_api_request_duration_seconds histogram"]
        for route, buckets in sorted(self.latency.items()):
            running = 0
            for bound, n in zip(BUCKETS, buckets, strict=False):
                running += n
                out.append(f"gentask_api_request_duration_seconds_bucket{_labels(route=route, le=bound)} {running}")
            count = self.latency_count[route]
            out.append(f"gentask_api_request_duration_seconds_bucket{_labels(route=route, le='+Inf')} {count}")
            out.append(f"gentask_api_request_duration_seconds_sum{_labels(route=route)} {self.latency_sum[route]:.6f}")
            out.append(f"gentask_api_request_duration_seconds_count{_labels(route=route)} {count}")
        out += ["# HELP gentask_api_tasks_created_total GenerationTasks created through the API, by type.",
                "# TYPE gentask_api_tasks_created_total counter"]
        out += [f"gentask_api_tasks_created_total{_labels(type=t)} {n}" for t, n in sorted(self.created.items())]
        out += ["# HELP gentask_api_rejected_total Requests refused by a limit (rate, unfinished, quota).",
                "# TYPE gentask_api_rejected_total counter"]
        out += [f"gentask_api_rejected_total{_labels(limit=k)} {n}" for k, n in sorted(self.rejected.items())]
        out += ["# HELP gentask_api_mirror_dropped_total Create-time mirror writes skipped "
                "(too many tasks waiting for MongoDB).",
                "# TYPE gentask_api_mirror_dropped_total counter",
                f"gentask_api_mirror_dropped_total {self.mirror_dropped}"]
        for name, read in sorted(self.gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {read()}"]
        for name, (words, read) in sorted(self.counters.items()):
            out += [f"# HELP {name} {words}", f"# TYPE {name} counter", f"{name} {read()}"]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; note its route template, status and time."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
