"""Prometheus metrics and the probes, served by the operator on GENTASK_METRICS_PORT."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from gentask.domain.task import Cost

BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
WEBHOOK_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)


class Metrics:
    """The operator's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("gentask_tasks", "Tasks the operator knows, by phase, type and provider",
                           ["phase", "type", "provider"], registry=r)
        self.duration = Histogram("gentask_task_duration_seconds", "Start to finish of finished tasks",
                                  ["type", "provider", "phase"], buckets=BUCKETS, registry=r)
        self.queue_wait = Histogram("gentask_task_queue_wait_seconds", "Creation to Running",
                                    ["type", "priority"], buckets=BUCKETS, registry=r)
        self.provider_errors = PromCounter("gentask_provider_errors_total",
                                           "Provider failures seen on finished tasks, by class",
                                           ["provider", "reason"], registry=r)
        self.transitions = PromCounter("gentask_transitions_total", "Phase transitions observed",
                                       ["phase", "reason"], registry=r)
        self.api_writes = PromCounter("gentask_operator_api_writes_total",
                                      "Writes the operator sent to the Kubernetes API", ["kind"], registry=r)
        self.mirror_lag = Gauge("gentask_mirror_lag_seconds", "Age of the oldest change not yet in MongoDB",
                                registry=r)
        self.mirror_pending = Gauge("gentask_mirror_pending", "Task changes waiting for MongoDB", registry=r)
        self.webhook_attempts = PromCounter("gentask_webhook_attempts_total",
                                            "Webhook delivery attempts, by event and result (2xx, 4xx, 5xx, 429, "
                                            "timeout, connection, refused, key)", ["event", "result"], registry=r)
        self.webhook_deliveries = PromCounter("gentask_webhook_deliveries_total",
                                              "Webhook events settled, by event and outcome (delivered, failed)",
                                              ["event", "outcome"], registry=r)
        self.webhook_lag = Histogram("gentask_webhook_delivery_lag_seconds",
                                     "From an event (its time in the status) to the receiver's 2xx", ["event"],
                                     buckets=WEBHOOK_BUCKETS, registry=r)
        self.webhook_pending = Gauge("gentask_webhook_pending", "Tasks with webhook events not yet settled",
                                     registry=r)
        # Cost and usage of finished tasks, counted once, when this process sees a task it knew
        # unfinished finish (observe.py): a restart does not count again the tasks that finished
        # before it (it never sees them unfinished), so a counter is exact per process lifetime and
        # Prometheus' rate() and increase() handle the reset. The usage endpoint is the record.
        self.cost = PromCounter("gentask_task_cost_total", "Cost of finished tasks by the price table, in currency "
                                "units (each attempt under its own provider and model)",
                                ["namespace", "user", "provider", "model", "currency"], registry=r)
        self.usage = PromCounter("gentask_task_usage_total", "Usage of finished tasks: images, input_tokens, "
                                 "output_tokens, video_seconds, video_tokens",
                                 ["namespace", "user", "provider", "model", "unit"], registry=r)
        self._by_uid: dict[str, tuple[str, str, str]] = {}

    def observe_task(self, uid: str, phase: str, type_: str, provider: str) -> None:
        """Count the task under its current (phase, type, provider), moving it from its previous one."""
        new = (phase, type_, provider)
        old = self._by_uid.get(uid)
        if old == new:
            return
        if old is not None:
            self.tasks.labels(*old).dec()
        self._by_uid[uid] = new
        self.tasks.labels(*new).inc()

    def forget_task(self, uid: str) -> None:
        """Stop counting a task that is gone."""
        old = self._by_uid.pop(uid, None)
        if old is not None:
            self.tasks.labels(*old).dec()

    def count_cost(self, namespace: str, user: str, cost: Cost | None) -> None:
        """Add a finished task's attempts to the cost and usage counters."""
        if cost is None:
            return
        for a in cost.attempts:
            amount = Decimal(a.amount)
            if amount > 0:
                self.cost.labels(namespace, user, a.provider, a.model, a.currency).inc(float(amount))
            for unit, value in a.usage.model_dump(exclude_none=True).items():
                if value:
                    self.usage.labels(namespace, user, a.provider, a.model, unit).inc(value)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
