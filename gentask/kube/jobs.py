"""The manifests the operator creates: each namespace's worker RBAC (once) and a task's Job."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gentask.domain.task import GROUP, PLURAL, GenerationTask
from gentask.kube.names import (
    ANNOTATION_TASK,
    EXIT_PERMANENT,
    LABEL_COMPONENT,
    MANAGED_BY,
    WORKER_ACCOUNT,
    WORKER_CONTAINER,
    job_name,
    owner_reference,
    task_labels,
)

if TYPE_CHECKING:
    from gentask.config import Settings

# Keys read from the credentials Secret; every one optional, so a cluster that only uses the
# fake provider needs no keys at all.
SECRET_KEYS = ("MONGO_URL", "ARK_API_KEY", "VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY", "OPENAI_API_KEY")

RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def _meta(task: GenerationTask, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": task.namespace,
            "labels": {**task_labels(task), LABEL_COMPONENT: component},
            "ownerReferences": [owner_reference(task)]}


def worker_rbac(namespace: str) -> list[dict[str, Any]]:
    """The namespace's worker service account, allowed to patch task statuses and nothing else.

    No get: a worker learns its task from its pod (ANNOTATION_TASK) and reads it again, when it
    must, through an empty status patch, which the admission policy allows for its own task only."""
    meta = {"name": WORKER_ACCOUNT, "namespace": namespace, "labels": {**MANAGED_BY, LABEL_COMPONENT: "worker"}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKER_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": WORKER_ACCOUNT, "namespace": namespace}]},
    ]


def task_snapshot(task: GenerationTask) -> str:
    """The task as its worker needs it (ANNOTATION_TASK): identity, resourceVersion, spec, status."""
    meta = task.metadata
    body = {"apiVersion": task.api_version, "kind": task.kind,
            "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid,
                         "resourceVersion": meta.resource_version, "labels": meta.labels},
            "spec": task.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            "status": task.status.model_dump(by_alias=True, exclude_none=True, mode="json")}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _env(settings: Settings) -> list[dict[str, Any]]:
    secret = settings.credentials_secret
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "GENTASK_TASK",
         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_TASK}']"}}},
    ]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in SECRET_KEYS]
    plain = {"LOG_LEVEL": settings.log_level, "AI_TIMEOUT": str(settings.ai_timeout),
             "ARK_BASE_URL": settings.ark_base_url, "VOLCENGINE_VISUAL_BASE_URL": settings.visual_base_url,
             "OPENAI_BASE_URL": settings.openai_base_url, "GENTASK_PROVIDERS": ",".join(settings.providers),
             "ENVIRONMENT": settings.environment}
    if settings.prices:                 # the price table the worker computes status.cost with
        plain["GENTASK_PRICES"] = settings.prices
    env += [{"name": k, "value": v} for k, v in plain.items()]
    return env


def _resources(settings: Settings) -> dict[str, Any]:
    """Requests and limits of the worker container (GENTASK_WORKER_*). No CPU limit: a worker waits on
    its vendor, and a quota would only throttle its start; the request reserves its share. Node disk
    (ephemeral-storage: its /tmp and its logs) is requested and capped, so a runaway task is evicted
    rather than filling the node."""
    return {"requests": {"cpu": settings.worker_cpu_request, "memory": settings.worker_memory_request,
                         "ephemeral-storage": settings.worker_ephemeral_storage_request},
            "limits": {"memory": settings.worker_memory_limit,
                       "ephemeral-storage": settings.worker_ephemeral_storage_limit}}


def job_manifest(task: GenerationTask, settings: Settings) -> dict[str, Any]:
    """The task's Job: deadline, retries and TTL from the spec, the restricted pod, credentials by reference.

    `task` is the task as the operator queued it: its pod carries it (task_snapshot) for the worker."""
    spec = task.spec
    name = task.name
    labels = {**task_labels(task), LABEL_COMPONENT: "worker"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": _meta(task, job_name(name), "worker"),
        "spec": {
            "backoffLimit": spec.retries,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": WORKER_CONTAINER, "operator": "In",
                                                      "values": [EXIT_PERMANENT]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_TASK: task_snapshot(task)}},
                "spec": {
                    "restartPolicy": "Never",
                    "priorityClassName": spec.priority.priority_class,
                    "serviceAccountName": WORKER_ACCOUNT,
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 15,
                    "securityContext": RESTRICTED_POD,
                    "containers": [{
                        "name": WORKER_CONTAINER,
                        "image": settings.worker_image,
                        "imagePullPolicy": settings.worker_image_pull_policy,
                        "command": ["gentask", "worker", "run", f"{task.namespace}/{name}"],
                        "env": _env(settings),
                        "securityContext": RESTRICTED_CONTAINER,
                        "resources": _resources(settings),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": settings.worker_tmp_size_limit}}],
                },
            },
        },
    }
