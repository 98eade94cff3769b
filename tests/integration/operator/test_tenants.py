"""Namespaces as tenants: one operator serving the namespaces that carry the tenant label, each with
its own credentials Secret; a task gentask will not run waits with a status and an Event that say why.

The operator here watches `tn<run>-*` only (never the other suites' namespaces) with
GENTASK_TENANT_LABEL=gentask.io/tenant=enabled; the local Ark server accepts one key, team A's.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client

from devcluster.vendors.ark import ArkServer
from tests.integration.conftest import wait_default_account
from tests.integration.operator.conftest import Tasks, start_operator, stop_operator
from tests.support.waits import wait_for

LABEL = "gentask.io/tenant"
KEY_A = "ark-key-of-team-a"
KEY_B = "ark-key-of-team-b"
ARK_TEXT = {"type": "text", "provider": "volcengine", "model": "doubao-pro-4k", "prompt": "hello",
            "params": {"maxTokens": 16}}
FAKE_TEXT = {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "hello", "params": {"maxTokens": 8}}


@pytest.fixture(scope="module")
def ark():
    with ArkServer(api_key=KEY_A) as server:
        yield server


@pytest.fixture(scope="module")
def tenant_run(cluster, ark, tmp_path_factory):
    """The run's prefix and its operator (scope tn<run>-*, served: the labelled namespaces)."""
    prefix = f"tn{uuid.uuid4().hex[:6]}"
    log = tmp_path_factory.mktemp("tenants") / "operator.log"
    op = start_operator(cluster, log, GENTASK_WATCH_NAMESPACES=f"{prefix}-*",
                        GENTASK_TENANT_LABEL=f"{LABEL}=enabled", ARK_BASE_URL=ark.url, GENTASK_RESYNC_SECONDS="60")
    made: list[str] = []
    yield prefix, op, made
    stop_operator(op)
    core = client.CoreV1Api(cluster.api)
    for ns in made:
        core.delete_namespace(ns, propagation_policy="Background")


def make_namespace(cluster, tenant_run, suffix: str, *, labelled: bool, secret: dict | None) -> Tasks:
    prefix, op, made = tenant_run
    core = client.CoreV1Api(cluster.api)
    ns = f"{prefix}-{suffix}"
    labels = {"gentask.io/test": "true", **({LABEL: "enabled"} if labelled else {})}
    core.create_namespace({"metadata": {"name": ns, "labels": labels}})
    made.append(ns)
    wait_default_account(cluster, ns)
    if secret is not None:
        core.create_namespaced_secret(ns, {"metadata": {"name": "gentask-credentials"}, "stringData": secret})
    return Tasks(cluster, ns, op.log)


def events_of(cluster, ns: str, name: str) -> list:
    return client.CoreV1Api(cluster.api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}").items


def test_each_team_s_pod_uses_its_own_namespace_s_key(cluster, tenant_run, ark):
    team_a = make_namespace(cluster, tenant_run, "a", labelled=True,
                            secret={"MONGO_URL": cluster.mongo_url, "ARK_API_KEY": KEY_A})
    team_b = make_namespace(cluster, tenant_run, "b", labelled=True,
                            secret={"MONGO_URL": cluster.mongo_url, "ARK_API_KEY": KEY_B})
    a = team_a.create(**ARK_TEXT)
    b = team_b.create(**ARK_TEXT)
    done_a = team_a.wait_phase(a, "Succeeded", "Failed")
    assert done_a["phase"] == "Succeeded", done_a
    assert done_a["result"]["text"]
    done_b = wait_for(lambda: team_b.status(b), 90, what=f"task {team_b.ns}/{b} to end",
                      until=lambda s: s.get("phase") in ("Succeeded", "Failed"), **team_b.watching(b))
    # team B's pod sent team B's key (the one in its namespace), which this Ark refuses with its 401
    assert done_b["phase"] == "Failed", done_b
    assert done_b["reason"] == "AuthenticationFailed", done_b
    assert "The API key or AK/SK in the request is missing or invalid" in done_b["message"], done_b
    # each Job names the Secret of its own namespace, nothing else
    for tasks, name in ((team_a, a), (team_b, b)):
        job = client.BatchV1Api(cluster.api).read_namespaced_job(name, tasks.ns)
        refs = {e.value_from.secret_key_ref.name for e in job.spec.template.spec.containers[0].env
                if e.value_from and e.value_from.secret_key_ref}
        assert refs == {"gentask-credentials"} and job.metadata.namespace == tasks.ns


def test_a_task_in_a_namespace_not_enabled_says_so_and_runs_once_labelled(cluster, tenant_run):
    prefix, op, made = tenant_run
    # out of the operator's scope (tn<run>-*): never written to, whatever its labels
    core = client.CoreV1Api(cluster.api)
    outside_ns = f"{prefix}x-outside"
    core.create_namespace({"metadata": {"name": outside_ns, "labels": {"gentask.io/test": "true"}}})
    made.append(outside_ns)
    wait_default_account(cluster, outside_ns)
    outside = Tasks(cluster, outside_ns, op.log)
    untouched = outside.create(**FAKE_TEXT)
    tasks = make_namespace(cluster, tenant_run, "c", labelled=False, secret={"MONGO_URL": cluster.mongo_url})
    started = time.monotonic()
    name = tasks.create(**FAKE_TEXT)
    status = tasks.wait_status(name, lambda s: s.get("reason") == "NamespaceNotEnabled", 15,
                               what="to say its namespace is not enabled")
    took = time.monotonic() - started
    assert took < 10, f"the status came after {took:.1f}s"
    assert status["phase"] == "Pending"
    assert f"kubectl label namespace {tasks.ns} {LABEL}=enabled" in status["message"], status
    scheduled = {c["type"]: c for c in status["conditions"]}["Scheduled"]
    assert scheduled["status"] == "False" and scheduled["reason"] == "NamespaceNotEnabled"
    events = wait_for(lambda: [e for e in events_of(cluster, tasks.ns, name) if e.reason == "NamespaceNotEnabled"],
                      15, what="the NamespaceNotEnabled Event")
    assert events[0].type == "Warning" and "kubectl label namespace" in events[0].message
    client.CoreV1Api(cluster.api).patch_namespace(tasks.ns, {"metadata": {"labels": {LABEL: "enabled"}}})
    labelled = time.monotonic()
    done = tasks.wait_phase(name, "Succeeded", timeout=60)
    assert done["result"]["text"]
    # the namespace watch started it, not the resync (60 s here)
    assert time.monotonic() - labelled < 30
    assert outside.status(untouched) == {}, "a task out of the operator's scope got a status"


def test_missing_credentials_and_provider_keys_wait_with_what_to_create(cluster, tenant_run):
    tasks = make_namespace(cluster, tenant_run, "d", labelled=True, secret=None)
    name = tasks.create(**ARK_TEXT)
    status = tasks.wait_status(name, lambda s: s.get("reason") == "CredentialsMissing", 15,
                               what="to say the Secret is missing")
    assert status["phase"] == "Pending"
    assert f"there is no Secret gentask-credentials in namespace {tasks.ns}" in status["message"], status
    assert "kubectl create secret generic gentask-credentials" in status["message"]
    assert not client.BatchV1Api(cluster.api).list_namespaced_job(tasks.ns).items, "no Job before credentials"
    # a Secret without the provider's key: the task names the key it lacks
    client.CoreV1Api(cluster.api).create_namespaced_secret(tasks.ns, {
        "metadata": {"name": "gentask-credentials"}, "stringData": {"MONGO_URL": cluster.mongo_url}})
    other = tasks.create(**ARK_TEXT)
    status = tasks.wait_status(other, lambda s: s.get("reason") == "ProviderNotConfigured", 20,
                               what="to say the provider key is missing")
    assert "has no ARK_API_KEY" in status["message"] and "kubectl patch secret gentask-credentials" in \
        status["message"], status
    assert [e for e in events_of(cluster, tasks.ns, other) if e.reason == "ProviderNotConfigured"]
    # the first task saw the Secret come too (within seconds, not at the 60 s resync): it now lacks the key
    status = tasks.wait_status(name, lambda s: s.get("reason") == "ProviderNotConfigured", 20,
                               what="to look again once the Secret exists")
    # the fake provider needs no key: it runs in the same namespace meanwhile
    fake = tasks.create(**FAKE_TEXT)
    assert tasks.wait_phase(fake, "Succeeded", timeout=60)["phase"] == "Succeeded"
    # the key added: both waiting tasks run, long before the next resync
    fixed = time.monotonic()
    client.CoreV1Api(cluster.api).patch_namespaced_secret("gentask-credentials", tasks.ns,
                                                          {"stringData": {"ARK_API_KEY": KEY_A}})
    for waiting in (name, other):
        done = tasks.wait_phase(waiting, "Succeeded", "Failed", timeout=60)
        assert done["phase"] == "Succeeded", done
    assert time.monotonic() - fixed < 40
