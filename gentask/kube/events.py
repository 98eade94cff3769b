"""Kubernetes Events about a task (what `kubectl describe gt NAME` shows)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from kubernetes import client
from kubernetes.client.rest import ApiException

from gentask.domain.task import API_VERSION, KIND

log = logging.getLogger("gentask.kube.events")


def emit(api: client.ApiClient, task: dict, reason: str, message: str, warning: bool = False,
         component: str = "gentask-operator") -> None:
    meta = task["metadata"]
    ts = datetime.now(timezone.utc)
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
        involved_object=client.V1ObjectReference(api_version=API_VERSION, kind=KIND, name=meta["name"],
                                                 namespace=meta["namespace"], uid=meta["uid"],
                                                 resource_version=meta.get("resourceVersion")),
        reason=reason, message=message[:1024], type="Warning" if warning else "Normal",
        source=client.V1EventSource(component=component), first_timestamp=ts, last_timestamp=ts, count=1,
        reporting_component=component, reporting_instance=component)
    try:
        client.CoreV1Api(api).create_namespaced_event(meta["namespace"], body)
    except ApiException as exc:  # an event is information; never fail a transition over it
        log.warning("could not record event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], exc.reason)
