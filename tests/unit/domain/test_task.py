"""The GenerationTask models: defaults, validation messages, manifests."""

import pytest
from pydantic import ValidationError

from gentask.domain import GenerationTask, GenerationTaskSpec, Phase, Priority


def test_defaults_follow_design():
    spec = GenerationTaskSpec(type="image", provider="volcengine", model="m", prompt="p")
    assert spec.priority is Priority.DEFAULT and spec.retries == 3 and spec.timeout_seconds == 600
    assert spec.ttl_seconds_after_finished == 86400 and spec.cancel is False
    assert spec.priority.priority_class == "gentask-default"


def test_manifest_uses_the_api_field_names():
    task = GenerationTask(metadata={"name": "t1"}, spec=GenerationTaskSpec.model_validate(
        {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "hi", "userID": "u1",
         "params": {"maxTokens": 10}}))
    body = task.to_manifest()
    assert body["apiVersion"] == "gentask.io/v1alpha1" and body["kind"] == "GenerationTask"
    assert body["spec"]["userID"] == "u1" and body["spec"]["params"] == {"maxTokens": 10}
    assert "status" not in body


@pytest.mark.parametrize("patch,field", [
    ({"type": "audio"}, "type"), ({"prompt": ""}, "prompt"), ({"retries": -1}, "retries"),
    ({"priority": "urgent"}, "priority"), ({"params": {"size": "big"}}, "params.size"),
    ({"params": {"unknown": 1}}, "params.unknown"),
])
def test_invalid_spec_names_the_field(patch, field):
    base = {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "p"}
    with pytest.raises(ValidationError) as err:
        GenerationTaskSpec.model_validate({**base, **patch})
    assert field in str(err.value)


def test_phase_order_never_goes_backwards():
    assert Phase.PENDING.rank < Phase.QUEUED.rank < Phase.RUNNING.rank < Phase.SUCCEEDED.rank
    assert all(p.terminal for p in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED))
    assert not Phase.RUNNING.terminal
