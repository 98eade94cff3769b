"""Bad input: every refusal in the envelope, with field, value and accepted values; never a 500."""

from __future__ import annotations

from tests.integration.api.conftest import IMAGE, TEXT, VIDEO


def _refused(r, status: int) -> dict:
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["success"] is False and doc["data"] is None and doc["message"]
    return doc


def test_malformed_json_is_400(alice):
    r = alice.post("/api/v1/ai/image/task", content=b'{"prompt": "a fox",',
                   headers={"Content-Type": "application/json"})
    assert "malformed JSON" in _refused(r, 400)["message"]


def test_missing_and_invalid_fields_are_422_with_field_value_accepted(alice):
    doc = _refused(alice.post("/api/v1/ai/image/task", json={"prompt": "", "priority": "urgent", "seed": "x"}), 422)
    errors = {e["field"]: e for e in doc["errors"]}
    assert {"prompt", "provider", "model", "priority", "seed"} <= set(errors)
    assert errors["provider"]["accepted"] == "required"
    assert errors["priority"]["value"] == "urgent" and "critical" in errors["priority"]["accepted"]
    assert errors["seed"]["value"] == "x" and errors["seed"]["accepted"] == "an integer"
    assert _refused(alice.post("/api/v1/ai/text/task", json=[1, 2]), 422)["errors"][0]["field"] == "body"


def test_parameters_the_model_does_not_take_are_422_with_the_catalogs_values(alice):
    doc = _refused(alice.post("/api/v1/ai/image/task", json={**IMAGE, "provider": "volcengine",
                                                            "model": "doubao-seedream-3-0-t2i-250415",
                                                            "size": "640x640"}), 422)
    (error,) = doc["errors"]
    assert error["field"] == "size" and error["value"] == "640x640"
    assert "1024x1024" in error["accepted"] and "864x1152" in error["accepted"]
    doc = _refused(alice.post("/api/v1/ai/video/task", json={**VIDEO, "duration": 11}), 422)
    assert doc["errors"][0]["field"] == "duration" and "1..10" in doc["errors"][0]["accepted"]
    doc = _refused(alice.post("/api/v1/ai/image/task", json={**IMAGE, "size": "8x8000"}), 422)
    assert doc["errors"][0]["field"] == "size" and "16..2048" in doc["errors"][0]["accepted"]
    doc = _refused(alice.post("/api/v1/ai/text/task", json={**TEXT, "provider": "volcengine",
                                                           "model": "doubao-pro-4k", "temperature": 1.5}), 422)
    assert doc["errors"][0] == {"field": "temperature", "value": 1.5, "message": "not accepted",
                                "accepted": "volcengine/doubao-pro-4k accepts 0..1"}


def test_unknown_provider_or_model_is_400_listing_the_supported_ones(alice):
    doc = _refused(alice.post("/api/v1/ai/image/task", json={**IMAGE, "provider": "midjourney"}), 400)
    assert doc["errors"][0] == {"field": "provider", "value": "midjourney", "message": "unknown provider",
                                "accepted": "supported providers: fake, openai, volcengine"}
    doc = _refused(alice.post("/api/v1/ai/image/task", json={**IMAGE, "model": "fake-painter"}), 400)
    assert doc["errors"][0]["field"] == "model" and "fake-image" in doc["errors"][0]["accepted"]
    doc = _refused(alice.post("/api/v1/ai/text/task", json={**TEXT, "model": "fake-image"}), 400)
    assert "fake-text" in doc["errors"][0]["accepted"]
    doc = _refused(alice.post("/api/v1/ai/image/task", json={**IMAGE, "provider": "openai", "model": "dall-e-3",
                                                            "size": "1024x1024"}), 400)
    assert "gpt-image-1.5" in doc["errors"][0]["accepted"]                         # retired: names the successor
    doc = _refused(alice.post("/api/v1/ai/image/task", json={**IMAGE, "fallbacks": [
        {"provider": "nobody", "model": "x"}]}), 400)
    assert doc["errors"][0]["field"] == "fallbacks[0].provider"


def test_a_provider_this_server_does_not_enable_is_400(start_api):
    c = start_api(providers=["fake"]).client("alice")
    doc = _refused(c.post("/api/v1/ai/text/task", json={**TEXT, "provider": "openai", "model": "gpt-4.1"}), 400)
    assert "GENTASK_PROVIDERS" in doc["errors"][0]["accepted"]


def test_a_body_over_the_limit_is_413(start_api):
    c = start_api(api_max_body_bytes=4096).client("alice")
    _refused(c.post("/api/v1/ai/text/task", json={**TEXT, "system_prompt": "x" * 5000}), 413)

    def chunks():                    # no Content-Length: counted while reading
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'
    _refused(c.post("/api/v1/ai/text/task", content=chunks(), headers={"Content-Type": "application/json"}), 413)
    assert c.post("/api/v1/ai/text/task", json=TEXT).status_code == 200


def test_unknown_paths_methods_and_ids_answer_in_the_envelope(alice):
    _refused(alice.get("/api/v1/ai/nothing"), 404)
    _refused(alice.put("/api/v1/ai/image/task", json=IMAGE), 405)
    _refused(alice.get("/api/v1/ai/task/result/img-doesnotexist"), 404)
    _refused(alice.get("/api/v1/ai/task/result/..%2F..%2Fetc"), 404)
    _refused(alice.get("/api/v1/ai/task/result/" + "a" * 300), 404)
    _refused(alice.get("/api/v1/ai/tasks", params={"limit": 101}), 422)
    _refused(alice.get("/api/v1/ai/tasks", params={"status": "done"}), 422)
