"""Typed tasks in the API: one view from a live task or its mirror record, the index's view cache, names."""

from __future__ import annotations

import pytest

from gentask.api.index import TaskIndex, UnreadableTask, parse_task
from gentask.api.translate import api_field, api_words, param_problem_field
from gentask.api.views import is_finished, record_of, task_view
from gentask.storage import record_from_task

SHA = "ab" * 32


def _obj(rv: int = 7, phase: str | None = "Succeeded", name: str = "img-a1b2c3d4") -> dict:
    obj = {
        "apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(rv),
                     "creationTimestamp": "2026-12-01T10:00:00Z", "labels": {"gentask.io/user": "ualice"},
                     "annotations": {"gentask.io/request-sha256": SHA,
                                     "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "a fox", "userID": "alice",
                 "priority": "critical", "params": {"size": "64x64", "responseFormat": "b64_json", "seed": 7},
                 "fallbacks": [{"provider": "openai", "model": "gpt-image-1.5"}]},
    }
    if phase:
        obj["status"] = {"phase": phase, "reason": "Completed", "attempts": 1,
                         "servedBy": {"provider": "fake", "model": "fake-image"},
                         "completionTime": "2026-12-01T10:00:09Z",
                         "result": {"images": [{"url": "https://v/fox.png", "artifact": "uid/1/image-0.png",
                                                "mimeType": "image/png", "sizeBytes": 12, "sha256": SHA}],
                                    "usage": {"images": 1}}}
    return obj


@pytest.mark.parametrize("phase", [None, "Running", "Succeeded"])
def test_a_live_task_and_its_mirror_record_give_the_same_view(phase):
    obj = _obj(phase=phase)
    live = task_view(record_of(parse_task(obj))).model_dump()
    archived = task_view(record_from_task(obj)).model_dump()
    assert live == archived
    assert live["params"] == {"size": "64x64", "response_format": "b64_json", "seed": 7}
    assert live["priority"] == "critical" and live["user_id"] == "alice"


def test_parsing_keeps_what_the_api_reads_and_drops_the_bulk():
    task = parse_task(_obj())
    assert task.metadata.annotations == {"gentask.io/request-sha256": SHA}
    assert "managedFields" not in (task.metadata.model_extra or {})
    assert task.status.finished and not parse_task(_obj(phase="Running")).status.finished
    assert is_finished({"phase": "Cancelled"}) and not is_finished({"phase": "Queued"}) and not is_finished({})
    broken = _obj()
    broken["spec"]["priority"] = "urgent"
    with pytest.raises(UnreadableTask, match="ns/img-a1b2c3d4"):
        parse_task(broken)


def test_the_index_keeps_the_newest_version_and_one_view_of_it():
    index = TaskIndex(None, "ns")                                   # no watch runs here
    index.put_object(_obj(rv=5, phase="Running"))
    first = index.get("img-a1b2c3d4")
    assert index.view(first) is index.view(first)                   # built once
    index.put_object(_obj(rv=4, phase="Queued"))                    # an older version is ignored
    assert index.get("img-a1b2c3d4") is first and index.unfinished("ualice") == 1
    index.put_object(_obj(rv=6, phase="Succeeded"))
    newer = index.get("img-a1b2c3d4")
    assert index.view(newer).status == "completed" and index.unfinished("ualice") == 0
    broken = _obj(rv=7)
    broken["spec"]["type"] = "audio"
    assert index.put_object(broken) is None and index.get("img-a1b2c3d4") is None    # unreadable: dropped
    assert len(index) == 0


def test_names_are_said_the_api_way():
    assert api_field("spec.timeoutSeconds") == "timeout" and api_field("userID") == "user_id"
    assert api_field("ttlSecondsAfterFinished") == "ttl_seconds_after_finished"
    assert api_field("fallbacks[0].model") == "fallbacks[0].model"
    assert param_problem_field("spec.params.maxTokens") == "max_tokens"
    assert param_problem_field("spec.fallbacks[1].provider") == "fallbacks[1].provider"
    assert api_words("maxTokens from 1 to 4096; responseFormat url") == "max_tokens from 1 to 4096; response_format url"


def test_the_watch_copy_of_a_version_the_index_holds_is_not_parsed_again():
    index = TaskIndex(None, "ns")                                   # no watch runs here
    created = index.put_object(_obj(rv=7, phase=None))
    view = index.view(created)
    assert index.put_object(_obj(rv=7, phase=None)) is created     # the ADDED event after the create's answer
    assert index.view(index.get("img-a1b2c3d4")) is view
    newer = index.put_object(_obj(rv=8, phase="Running"))
    assert newer is not created and index.view(newer).status == "processing"
    assert index.unfinished(created.metadata.labels.get("gentask.io/user", "")) == 1


def test_usage_and_cost_read_the_same_in_a_view_and_in_a_webhook_body():
    from gentask.domain.pricing import Attempt, PriceTable, task_cost
    from gentask.domain.task import GenerationTask
    from gentask.domain.webhooks import task_data

    charged = task_cost([Attempt("volcengine", "doubao-seedance-1-0-pro-250528", False, {"video_tokens": 10},
                                 reason="ContentRejected", vendor_task_id="cgt-1"),
                         Attempt("fake", "fake-video", True, {"video_seconds": 2})],
                        PriceTable(), primary=("volcengine", "doubao-seedance-1-0-pro-250528"))
    task = GenerationTask.model_validate({
        "metadata": {"name": "vid-1", "namespace": "ns", "uid": "u1"},
        "spec": {"type": "video", "provider": "volcengine", "model": "doubao-seedance-1-0-pro-250528", "prompt": "p",
                 "fallbacks": [{"provider": "fake", "model": "fake-video"}]},
        "status": {"phase": "Succeeded", **charged}})
    view = task_view(record_of(task)).model_dump(mode="json")
    hook = task_data(task)
    assert view["usage"] == hook["usage"] and view["cost"] == hook["cost"]
    assert view["cost"]["totals"] == [{"amount": "0.00015", "currency": "CNY"}, {"amount": "0.1", "currency": "XTS"}]
    assert view["cost"]["amount"] is None                      # two currencies: no single total
    assert view["cost"]["attempts"][0]["vendor_task_id"] == "cgt-1"
    assert view["usage"]["video_seconds"] == 2 and view["usage"]["video_tokens"] == 10
