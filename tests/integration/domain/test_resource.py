"""The GenerationTask CRD on a real API server: examples apply, bad manifests are refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from gentask.domain import GROUP, PLURAL, VERSION

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))
VALID = {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask", "metadata": {"name": "t"},
         "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "a fox"}}


def _variant(path: str, value, name: str = "t") -> dict:
    body = copy.deepcopy(VALID)
    body["metadata"]["name"] = name
    *parents, leaf = path.split(".")
    node = body
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(leaf)
    else:
        node[leaf] = value
    return body


_DELETE = object()


def test_crd_is_established_with_short_names(cluster, namespace):
    got = cluster.kubectl("api-resources", "--api-group=gentask.io", "-o", "wide", check=True).stdout
    assert "generationtasks" in got and "gt,gentask" in got and "true" in got.lower()


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_applies(cluster, namespace, example):
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(example.read_text())
    name = doc["metadata"]["name"]
    if doc["kind"] == "GenerationQuota":
        listed = cluster.kubectl("get", "gq", "-n", namespace, name, check=True).stdout
        assert listed.splitlines()[0].split() == ["NAME", "USER", "CONCURRENT", "WAITING", "TODAY", "MONTH", "AGE"]
        return
    listed = cluster.kubectl("get", "gt", "-n", namespace, name, check=True).stdout
    header = listed.splitlines()[0].split()
    assert header == ["NAME", "TYPE", "PROVIDER", "MODEL", "PRIORITY", "PHASE", "REASON", "ATTEMPTS", "AGE"]


INVALID = [
    ("missing model", _variant("spec.model", _DELETE), "spec.model: Required value"),
    ("missing prompt", _variant("spec.prompt", _DELETE), "spec.prompt: Required value"),
    ("unknown type", _variant("spec.type", "audio"), 'spec.type: Unsupported value: "audio"'),
    ("empty prompt", _variant("spec.prompt", ""), "spec.prompt: Invalid value"),
    ("prompt too long", _variant("spec.prompt", "x" * 8001), "spec.prompt: Too long"),
    ("negative retries", _variant("spec.retries", -1), "spec.retries: Invalid value: -1"),
    ("too many retries", _variant("spec.retries", 11), "spec.retries: Invalid value: 11"),
    ("unknown priority", _variant("spec.priority", "urgent"), 'spec.priority: Unsupported value: "urgent"'),
    ("timeout too short", _variant("spec.timeoutSeconds", 1), "spec.timeoutSeconds: Invalid value: 1"),
    ("bad size", _variant("spec.params.size", "huge"), "spec.params.size: Invalid value"),
    ("bad response format", _variant("spec.params.responseFormat", "png"),
     "spec.params.responseFormat: Unsupported value"),
    ("temperature out of range", _variant("spec.params.temperature", 3), "spec.params.temperature: Invalid value"),
    ("bad provider name", _variant("spec.provider", "Open AI"), "spec.provider: Invalid value"),
    ("name too long for its Job", _variant("metadata.name", "x" * 64, name="x" * 64),
     "metadata.name must be at most 63"),
]


@pytest.mark.parametrize("body,message", [(b, m) for _, b, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_manifests_are_rejected_naming_the_field(cluster, namespace, body, message):
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_defaults_are_applied_by_the_api_server(cluster, namespace):
    api = client.CustomObjectsApi(cluster.api)
    got = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, copy.deepcopy(VALID))
    spec = got["spec"]
    assert (spec["priority"], spec["retries"], spec["timeoutSeconds"], spec["ttlSecondsAfterFinished"],
            spec["cancel"]) == ("default", 3, 600, 86400, False)


@pytest.mark.parametrize("field,value", [("model", "fake-other"), ("prompt", "another"), ("priority", "critical"),
                                         ("params", {"size": "64x64"}), ("retries", 0)])
def test_spec_is_immutable_after_creation(cluster, namespace, field, value):
    api = client.CustomObjectsApi(cluster.api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, copy.deepcopy(VALID))
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "t", {"spec": {field: value}})
    assert err.value.status == 422
    assert f"spec.{field} is immutable" in err.value.body


def test_cancel_may_be_set_but_not_unset(cluster, namespace):
    api = client.CustomObjectsApi(cluster.api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, copy.deepcopy(VALID))
    got = api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "t", {"spec": {"cancel": True}})
    assert got["spec"]["cancel"] is True
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "t", {"spec": {"cancel": False}})
    assert "spec.cancel cannot be unset" in err.value.body


def test_status_only_through_the_status_subresource(cluster, namespace):
    api = client.CustomObjectsApi(cluster.api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, copy.deepcopy(VALID))
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "t", {"status": {"phase": "Running"}})
    assert "status" not in api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "t")
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "t",
                                              {"status": {"phase": "Queued", "reason": "JobCreated", "attempts": 0}})
    row = cluster.kubectl("get", "gentask", "t", "-n", namespace, "--no-headers", check=True).stdout.split()
    assert row[5:8] == ["Queued", "JobCreated", "0"]
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "t",
                                                  {"status": {"reason": "BecauseISaidSo"}})
    assert "status.reason: Unsupported value" in err.value.body
