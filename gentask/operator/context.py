"""What the operator's handlers share (built once at start-up, kept in Kopf's memo)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from gentask.config import Settings
from gentask.kube.client import KubeClient
from gentask.operator.metrics import Metrics
from gentask.providers import Registry
from gentask.storage import MirrorWriter

log = logging.getLogger("gentask.operator")

@dataclass
class OperatorContext:
    """What every handler shares: settings, the one Kubernetes client, providers, metrics, the mirror."""

    settings: Settings
    kube: KubeClient
    registry: Registry
    metrics: Metrics
    mirror: MirrorWriter                                        # the one mirror writer (gentask.storage)
    executor: Any = None                                        # InlineExecutor when settings.executor == "inline"
    seen: dict[str, str] = field(default_factory=dict)          # uid -> last phase seen (events, metrics)
    ttl_timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    jobs_ensured: set[str] = field(default_factory=set)         # uids whose Job this process made or found
    worker_rbac: dict[str, float] = field(default_factory=dict)  # namespace -> when its worker account was ensured
    worker_rbac_locks: dict[str, asyncio.Lock] = field(default_factory=dict)   # one ensure a namespace at a time
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    notifier: Any = None                                        # gentask.operator.notify.Notifier (webhooks)
    tenants: Any = None                                         # gentask.operator.tenants.Tenants
    quotas: Any = None                                          # gentask.operator.quota.Quotas
    ready: bool = False
