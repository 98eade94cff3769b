"""The API's pure parts: keys, rate limit, names and labels, the task view, request hashes."""

from __future__ import annotations

import re

import pytest

from gentask.api.auth import KeyRing, presented_key
from gentask.api.errors import echo, field_name
from gentask.api.limits import RateLimiter
from gentask.api.schemas import ImageTaskRequest
from gentask.api.translate import canonical_hash
from gentask.api.views import task_view
from gentask.domain.task import TaskType
from gentask.kube.tasks import idempotent_name, random_name, user_label

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_key_ring_parses_users_and_roles_and_hides_keys():
    ring = KeyRing.parse("k1:alice, k2:root:admin,k3:team:ops")
    assert (ring.lookup("k1").user_id, ring.lookup("k1").admin) == ("alice", False)
    assert ring.lookup("k2").admin and ring.lookup("k3").user_id == "team:ops"
    assert ring.lookup("k4") is None and ring.lookup("") is None
    with pytest.raises(ValueError) as err:
        KeyRing.parse("secret-one:alice,secret-two")
    assert "entry 2" in str(err.value) and "secret-two" not in str(err.value)


def test_key_ring_maps_keys_to_namespaces():
    ring = KeyRing.parse("k1:ann:namespace=team-a,k2:boss:admin:namespace=team-b,k3:alice,k4:team:ops:admin")
    assert (ring.lookup("k1").user_id, ring.lookup("k1").namespace, ring.lookup("k1").admin) == ("ann", "team-a", False)
    assert (ring.lookup("k2").user_id, ring.lookup("k2").namespace, ring.lookup("k2").admin) == ("boss", "team-b", True)
    assert ring.lookup("k3").namespace is None                  # GENTASK_NAMESPACE, as before
    assert (ring.lookup("k4").user_id, ring.lookup("k4").admin) == ("team:ops", True)
    assert ring.namespaces() == {"team-a", "team-b"}
    with pytest.raises(ValueError) as err:
        KeyRing.parse("k1:ann,very-secret:ben:namespace=Team_B")
    assert "entry 2" in str(err.value) and "Team_B" in str(err.value) and "very-secret" not in str(err.value)


def test_presented_key_from_either_header():
    assert presented_key("Bearer abc", None) == "abc"
    assert presented_key("bearer  abc ", None) == "abc"
    assert presented_key(None, "xyz") == "xyz"
    assert presented_key("Basic abc", None) is None


def test_rate_limiter_refills(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("gentask.api.limits.time.monotonic", lambda: clock[0])
    limiter = RateLimiter(rate=2, burst=2)
    assert [limiter.take("a"), limiter.take("a")] == [0, 0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0
    clock[0] += 0.5
    assert limiter.take("a") == 0
    assert RateLimiter(rate=0, burst=1).take("a") == 0


def test_names_are_dns_labels_and_idempotent_names_are_stable():
    for type_, prefix in (("image", "img-"), ("video", "vid-"), ("text", "txt-")):
        name = random_name(type_)
        assert name.startswith(prefix) and DNS_LABEL.match(name) and len(name) <= 63
    a = idempotent_name("image", "alice", "key-1")
    assert a == idempotent_name("image", "alice", "key-1") and DNS_LABEL.match(a)
    assert a != idempotent_name("image", "bob", "key-1") != idempotent_name("image", "alice", "key-2")
    label = user_label("alice@example.com/ü")
    assert re.match(r"^[a-z0-9]{1,63}$", label) and label == user_label("alice@example.com/ü")


def test_request_hash_ignores_order_and_explicit_defaults():
    a = ImageTaskRequest.model_validate({"prompt": "p", "provider": "fake", "model": "fake-image", "size": "64x64"})
    b = ImageTaskRequest.model_validate({"size": "64x64", "model": "fake-image", "priority": "default",
                                         "provider": "fake", "prompt": "p", "user_id": "alice"})
    assert canonical_hash(TaskType.IMAGE, "alice", a) == canonical_hash(TaskType.IMAGE, "alice", b)
    assert canonical_hash(TaskType.IMAGE, "alice", a) != canonical_hash(TaskType.IMAGE, "bob", a)
    c = a.model_copy(update={"seed": 1})
    assert canonical_hash(TaskType.IMAGE, "alice", a) != canonical_hash(TaskType.IMAGE, "alice", c)


@pytest.mark.parametrize("phase,word", [("Pending", "pending"), ("Queued", "pending"), ("Running", "processing"),
                                        ("Succeeded", "completed"), ("Failed", "failed"), ("Cancelled", "cancelled")])
def test_task_view_speaks_the_old_status_words(phase, word):
    view = task_view({"name": "img-a", "userID": "u", "phase": phase, "params": {"responseFormat": "url"}}).model_dump()
    assert (view["status"], view["phase"]) == (word, phase)
    assert view["params"] == {"response_format": "url"}


def test_task_view_links_artifacts_and_keeps_vendor_urls():
    result = {"images": [{"url": "https://v/1.png", "artifact": "uid/1/image-0.png", "mimeType": "image/png"},
                         {"artifact": "uid/1/image-1.png", "mimeType": "image/png"}],
              "video": {"artifact": "uid/1/video.mp4"}, "text": "hi", "usage": {"tokens": 2}}
    view = task_view({"name": "img-a", "phase": "Succeeded", "result": result}).model_dump()["result"]
    assert view["image_urls"] == ["https://v/1.png", "/api/v1/ai/task/img-a/artifacts/image-1.png"]
    assert view["image_url"] == "https://v/1.png"
    assert view["video_url"] == "/api/v1/ai/task/img-a/artifacts/video.mp4"
    assert [a["name"] for a in view["artifacts"]] == ["image-0.png", "image-1.png", "video.mp4"]
    assert view["text_result"] == "hi" and view["usage"] == {"tokens": 2}


def test_error_fields_and_echoed_values():
    assert field_name(("body", "fallbacks", 0, "model")) == "fallbacks[0].model"
    assert field_name(("body",)) == "body" and field_name(("query", "limit")) == "limit"
    assert echo("x" * 500).endswith("…") and len(echo("x" * 500)) == 201
    assert echo(b"\xffa") == "\ufffda" and echo(float("nan")) == "nan"
