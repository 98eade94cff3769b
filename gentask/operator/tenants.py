"""Namespaces as tenants: which watched namespace gentask serves, and whether a served one can run a task.

With GENTASK_TENANT_LABEL and GENTASK_TENANT_NAMESPACES unset nothing changes: every watched namespace
is served and no check runs. With either set, a watched namespace is served when it is listed in
GENTASK_TENANT_NAMESPACES (names or globs) or carries the label. A task of a watched namespace that is
not served waits (Pending, reason NamespaceNotEnabled) with a message saying what to do and an Event;
it starts once the namespace is served (the namespace watch in gentask.operator.resync sees the label
come). Before a served namespace's task gets a Job, its credentials Secret must exist with MONGO_URL
(CredentialsMissing) and the key the task's provider needs (ProviderNotConfigured); such a task waits
too, and the namespace is looked at again every RECHECK_SECONDS until none does, so it starts within
seconds of the fix. Only the names of the Secret's keys are looked at; its values are never kept,
logged or written anywhere.
"""

from __future__ import annotations

import base64
import fnmatch
import logging
import time
from dataclasses import dataclass
from typing import Any

from gentask.config import Settings
from gentask.domain.catalog import lookup
from gentask.domain.task import GenerationTask
from gentask.kube.client import KubeClient
from gentask.kube.errors import KubeError

log = logging.getLogger("gentask.operator")

# How long a namespace's answers (served or not; its Secret's key names) are trusted: the namespace
# watch updates the first at once; a missing Secret is not remembered at all.
CACHE_SECONDS = 5.0
# How often the tasks that wait for their namespace's Secret look again (one Secret read and one
# listing of the namespace's Pending tasks per waiting namespace), so a Secret fixed starts them
# within seconds rather than at the next resync.
RECHECK_SECONDS = 5.0
SECRET_REASONS = frozenset({"CredentialsMissing", "ProviderNotConfigured"})
WAITING_REASONS = frozenset({"NamespaceNotEnabled", "CredentialsMissing", "ProviderNotConfigured"})
# The Secret keys each vendor API of the catalog (ModelSpec.api) needs in the task's pod.
KEYS_BY_API: dict[str, tuple[str, ...]] = {
    "ark": ("ARK_API_KEY",),
    "visual": ("VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY"),
    "openai": ("OPENAI_API_KEY",),
    "fake": (),
}


@dataclass(frozen=True)
class Refusal:
    """Why a task waits instead of running: a reason of the vocabulary and what to do about it."""

    reason: str
    message: str


def has_label(labels: dict[str, str] | None, label: str) -> bool:
    """The namespace's labels carry GENTASK_TENANT_LABEL (key=value, or key with any value)."""
    key, _, value = label.partition("=")
    labels = labels or {}
    return key in labels and (not value or labels[key] == value)


class Tenants:
    """The operator's view of its tenants: served namespaces and what their Secrets hold (key names)."""

    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube
        self.enabled = settings.tenancy
        self.label = settings.tenant_label
        self.patterns = settings.tenant_namespaces
        self.secret = settings.credentials_secret
        self._served: dict[str, tuple[float, bool]] = {}
        self._keys: dict[str, tuple[float, frozenset[str] | None]] = {}
        self.waiting: set[str] = set()     # namespaces with tasks waiting for their Secret (RECHECK_SECONDS)
        self.labelled: set[str] = set()    # what the namespace watch shows carrying the label
        self.synced = False                # the watch is live: `labelled` is the truth, no reads needed

    def listed(self, namespace: str) -> bool:
        """The namespace is one of GENTASK_TENANT_NAMESPACES (names or globs)."""
        return any(fnmatch.fnmatch(namespace, p) for p in self.patterns)

    def saw(self, namespace: str, labelled: bool) -> bool:
        """The namespace watch saw the label come (True) or go (False); True when it was not there before."""
        before = namespace in self.labelled
        if labelled:
            self.labelled.add(namespace)
        else:
            self.labelled.discard(namespace)
        self._served.pop(namespace, None)
        return labelled and not before

    async def served(self, namespace: str) -> bool:
        """Gentask runs this namespace's tasks."""
        if not self.enabled or self.listed(namespace):
            return True
        if not self.label:
            return False
        if self.synced:
            return namespace in self.labelled
        cached = self._served.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            labels = ((await self.kube.get_namespace(namespace)).get("metadata") or {}).get("labels")
        except KubeError as exc:
            if not exc.not_found:
                raise
            labels = None
        answer = has_label(labels, self.label)
        self._served[namespace] = (time.monotonic(), answer)
        return answer

    async def _secret_keys(self, namespace: str) -> frozenset[str] | None:
        """The names of the credentials Secret's non-empty keys; None when there is no Secret."""
        cached = self._keys.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            secret = await self.kube.get_secret(namespace, self.secret)
        except KubeError as exc:
            if not exc.not_found:
                raise
            keys = None
        else:
            data: dict[str, Any] = secret.get("data") or {}
            keys = frozenset(k for k, v in data.items() if v and base64.b64decode(v).strip())
            del secret, data           # the values go no further than this function
        if keys is not None:        # a Secret just created is seen by the next task's look at once
            self._keys[namespace] = (time.monotonic(), keys)
        return keys

    def not_enabled(self, namespace: str) -> Refusal:
        """The status of a task in a watched namespace that is not a tenant."""
        if self.label:
            todo = (f"label it: `kubectl label namespace {namespace} {self.label}`, and create the Secret "
                    f"{self.secret} there with MONGO_URL and the provider keys")
        else:
            todo = (f"ask the gentask administrator to add it to GENTASK_TENANT_NAMESPACES "
                    f"(now {', '.join(self.patterns)}; the chart's tenants.namespaces)")
        return Refusal("NamespaceNotEnabled", f"namespace {namespace} is not enabled for gentask, so this task "
                                              f"waits: {todo}; the task then starts (docs/tenants.md)")

    async def refusal(self, task: GenerationTask, *, check_credentials: bool) -> Refusal | None:
        """Why gentask will not run this task now (None: it may). `check_credentials`: the task's pod
        reads the namespace's Secret (the job executor; inline and pool use their own process's keys)."""
        if not self.enabled:
            return None
        namespace = task.namespace
        if not await self.served(namespace):
            return self.not_enabled(namespace)
        if not check_credentials:
            return None
        try:
            keys = await self._secret_keys(namespace)
        except KubeError as exc:
            if exc.status == 403:
                return Refusal("CredentialsMissing", f"the operator may not read Secret {self.secret} in namespace "
                                                     f"{namespace} (RBAC): grant it get on that Secret "
                                                     "(docs/tenants.md)")
            raise
        where = f"Secret {self.secret} in namespace {namespace}"
        if keys is None or "MONGO_URL" not in keys:
            missing = "there is no " + where if keys is None else f"{where} has no MONGO_URL"
            return Refusal("CredentialsMissing",
                           f"{missing}: the task's pod reads MONGO_URL and the provider keys from it, so this "
                           f"task waits; create it, e.g. `kubectl create secret generic {self.secret} -n {namespace} "
                           f"--from-literal=MONGO_URL=<url> --from-literal=ARK_API_KEY=<key>`; the task starts "
                           "within seconds of it (docs/tenants.md)")
        spec = task.spec
        model = lookup(spec.provider, spec.model)
        needed = KEYS_BY_API.get(model.api, ()) if model is not None else ()
        lacking = [k for k in needed if k not in keys]
        if lacking:
            patch = ",".join(f'"{k}":"<value>"' for k in lacking)
            return Refusal("ProviderNotConfigured",
                           f"provider {spec.provider} (model {spec.model}) is not configured in namespace {namespace}: "
                           f"{where} has no {' and no '.join(lacking)}, so this task waits; add "
                           f"{'them' if len(lacking) > 1 else 'it'}, e.g. `kubectl patch secret {self.secret} -n "
                           f"{namespace} --type merge -p '{{\"stringData\":{{{patch}}}}}'`; the task starts within "
                           "seconds of it (docs/tenants.md)")
        return None
