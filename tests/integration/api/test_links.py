"""Signed artifact links: absolute URLs a result gives, opened with the real curl and no header at all."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from gentask.api.signing import LinkSigner
from gentask.storage import ArtifactStore, connect
from tests.integration.api.conftest import IMAGE, create, now, sha256

CURL = "/usr/bin/curl"
KEY_A = "link-key-a-" + "a1" * 16
KEY_B = "link-key-b-" + "b2" * 16
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 24


def curl(url: str, tmp_path: Path) -> tuple[int, dict[str, str], bytes]:
    """GET with the real curl binary, no header of ours: (status, response headers, body)."""
    body, head = tmp_path / "body", tmp_path / "headers"
    proc = subprocess.run([CURL, "-sS", "-o", str(body), "-D", str(head), "-w", "%{http_code}", url],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    headers = {}
    for line in head.read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return int(proc.stdout), headers, body.read_bytes()


def finished_image(c, worker, png: bytes = PNG) -> dict:
    """An image task that succeeded with a stored PNG and no vendor URL (as with b64_json): its data."""
    task_id = create(c, "image", {**IMAGE, "response_format": "b64_json"})["task_id"]
    uid = worker.get(task_id)["metadata"]["uid"]
    worker.patch_status(task_id, {"phase": "Succeeded", "reason": "Completed", "attempts": 1, "completionTime": now(),
                                  "result": {"images": [worker.store(uid, "image-0", png, "image/png")]}})
    return worker.wait_result(c, task_id, lambda d: d.get("status") == "completed", "completed")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


@pytest.fixture
def signed_api(start_api):
    return start_api(api_link_keys=KEY_A)


def test_a_result_link_downloads_with_curl_and_no_header(signed_api, worker, tmp_path):
    alice = signed_api.client("alice")
    data = finished_image(alice, worker)
    (artifact,) = data["result"]["artifacts"]
    link = artifact["url"]
    assert link.startswith(f"{signed_api.url}/api/v1/ai/task/{data['task_id']}/artifacts/image-0.png?")
    # the old client's place and the result's both name the signed link: usable in an <img src>
    assert data["image_url"] == data["result"]["image_url"] == data["result"]["image_urls"][0] == link
    status, headers, body = curl(link, tmp_path)
    assert status == 200 and sha256(body) == artifact["sha256"] == sha256(PNG)
    assert headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff" and headers["content-security-policy"] == "sandbox"
    assert headers["content-disposition"] == 'inline; filename="image-0.png"'
    assert headers["etag"] == f'"{sha256(PNG)}"' and headers["content-length"] == str(len(PNG))
    max_age = int(headers["cache-control"].rsplit("=", 1)[1])
    assert headers["cache-control"].startswith("private") and 0 < max_age <= 3600
    # the list (the MongoDB history) gives the same kind of link
    worker.mirror(data["task_id"])
    listed = alice.get("/api/v1/ai/tasks", params={"type": "image"}).json()["data"]["tasks"]
    entry = next(t for t in listed if t["task_id"] == data["task_id"])
    assert curl(entry["result"]["artifacts"][0]["url"], tmp_path)[0] == 200


def test_an_expired_link_is_403_and_says_when_it_expired(signed_api, worker, tmp_path):
    alice = signed_api.client("alice")
    data = finished_image(alice, worker)
    past = int(time.time()) - 120
    link = LinkSigner([KEY_A], 3600).link(signed_api.url, data["task_id"], data_uid(data), "image-0.png",
                                          expires=past)
    status, headers, body = curl(link, tmp_path)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(past))
    assert status == 403 and headers["content-type"] == "application/json"
    assert f"expired at {when}" in body.decode() and b'"success":false' in body


def data_uid(data: dict) -> str:
    return parse_qs(urlsplit(data["result"]["artifacts"][0]["url"]).query)["uid"][0]


def test_a_link_with_anything_altered_is_403_signature_does_not_match(signed_api, worker, tmp_path):
    alice = signed_api.client("alice")
    data = finished_image(alice, worker)
    other = finished_image(alice, worker)          # another task of the same user, with the same file name
    link = data["result"]["artifacts"][0]["url"]
    query = parse_qs(urlsplit(link).query)
    signature, expires = query["signature"][0], query["expires"][0]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    altered = {
        "task": link.replace(f"/task/{data['task_id']}/", f"/task/{other['task_id']}/"),
        "file": link.replace("/image-0.png?", "/image-1.png?"),
        "expiry": with_query(link, expires=str(int(expires) + 60)),
        "signature": with_query(link, signature=flipped),
        "uid": with_query(link, uid=data_uid(other)),
    }
    for what, url in altered.items():
        status, _, body = curl(url, tmp_path)
        assert status == 403, (what, body)
        assert "signature does not match" in body.decode(), (what, body)
    assert curl(link, tmp_path)[0] == 200                      # the link as given still works


def test_incomplete_or_malformed_links_say_what_is_wrong(signed_api, worker, tmp_path):
    alice = signed_api.client("alice")
    link = finished_image(alice, worker)["result"]["artifacts"][0]["url"]
    without = with_query(link.split("?", 1)[0] + "?" + urlencode({"signature": "x"}))
    status, _, body = curl(without, tmp_path)
    assert status == 403 and "lacks uid, expires" in body.decode()
    status, _, body = curl(with_query(link, expires="soon"), tmp_path)
    assert status == 403 and "not a Unix time in whole seconds" in body.decode()


def test_a_rotated_key_still_verifies_links_of_the_old_one(start_api, worker, tmp_path):
    old = start_api(api_link_keys=KEY_A)
    data = finished_image(old.client("alice"), worker)
    old_link = data["result"]["artifacts"][0]["url"]
    rotated = start_api(api_link_keys=f"{KEY_B},{KEY_A}")     # the new key signs, the old one still verifies
    on_rotated = old_link.replace(old.url, rotated.url)
    assert curl(on_rotated, tmp_path)[0] == 200
    new_link = rotated.client("alice").get(f"/api/v1/ai/task/result/{data['task_id']}").json()["data"]
    new_link = new_link["result"]["artifacts"][0]["url"]
    assert parse_qs(urlsplit(new_link).query)["signature"] != parse_qs(urlsplit(old_link).query)["signature"]
    assert curl(new_link, tmp_path)[0] == 200
    dropped = start_api(api_link_keys=KEY_B)                  # the old key removed: its links stop working
    status, _, body = curl(old_link.replace(old.url, dropped.url), tmp_path)
    assert status == 403 and "signature does not match" in body.decode()
    assert curl(new_link.replace(rotated.url, dropped.url), tmp_path)[0] == 200


def test_without_a_key_each_process_signs_with_its_own_and_warns(start_api, worker, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gentask.api"):
        one = start_api()
        other = start_api()
    warnings = [r.getMessage() for r in caplog.records if "GENTASK_API_LINK_KEYS" in r.getMessage()]
    assert len(warnings) == 2 and "other API replicas refuse them" in warnings[0]
    link = finished_image(one.client("alice"), worker)["result"]["artifacts"][0]["url"]
    assert curl(link, tmp_path)[0] == 200
    status, _, body = curl(link.replace(one.url, other.url), tmp_path)      # another replica: another key
    assert status == 403 and "signature does not match" in body.decode()


def test_a_configured_key_never_reaches_a_log_line_or_an_answer(start_api, worker, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        api = start_api(api_link_keys=KEY_A)
        alice = api.client("alice")
        data = finished_image(alice, worker)
        answers = [alice.get(f"/api/v1/ai/task/result/{data['task_id']}").text,
                   alice.get("/api/v1/ai/tasks").text, api.client(None).get("/openapi.json").text]
        answers.append(curl(with_query(data["result"]["artifacts"][0]["url"], expires="1"), tmp_path)[2].decode())
    assert not [r for r in caplog.records if "GENTASK_API_LINK_KEYS" in r.getMessage()]     # no warning: a key is set
    for text in [r.getMessage() for r in caplog.records] + answers:
        assert KEY_A not in text
    assert KEY_A in api.settings.secrets()          # what the log redaction filter scrubs


def test_a_link_never_opens_a_later_task_that_reuses_the_name(signed_api, worker, tmp_path):
    alice = signed_api.client("alice")
    body = {**IMAGE, "response_format": "b64_json"}
    first = create(alice, "image", body, **{"Idempotency-Key": "reused-name-1"})
    uid = worker.get(first["task_id"])["metadata"]["uid"]
    worker.patch_status(first["task_id"], {"phase": "Succeeded", "reason": "Completed", "completionTime": now(),
                                           "result": {"images": [worker.store(uid, "image-0", PNG, "image/png")]}})
    link = worker.wait_result(alice, first["task_id"], lambda d: d.get("status") == "completed",
                              "completed")["result"]["artifacts"][0]["url"]
    assert alice.delete(f"/api/v1/ai/task/{first['task_id']}").status_code == 200
    second = create(alice, "image", body, **{"Idempotency-Key": "reused-name-1"})
    assert second["task_id"] == first["task_id"]                 # the same name, a new task
    uid2 = worker.get(second["task_id"])["metadata"]["uid"]
    assert uid2 != uid
    worker.patch_status(second["task_id"], {"phase": "Succeeded", "reason": "Completed", "completionTime": now(),
                                            "result": {"images": [worker.store(uid2, "image-0", b"\x89PNG other",
                                                                               "image/png")]}})
    worker.wait_result(alice, second["task_id"], lambda d: d.get("status") == "completed", "completed")
    status, _, answer = curl(link, tmp_path)
    assert status == 404 and "no longer exists" in answer.decode()


def test_a_stored_type_off_the_allowlist_downloads_as_an_attachment(signed_api, worker, tmp_path):
    alice = signed_api.client("alice")
    task_id = create(alice, "text")["task_id"]
    uid = worker.get(task_id)["metadata"]["uid"]
    page = b"<html><script>alert(document.cookie)</script></html>"
    ref = ArtifactStore(connect(worker.settings)).put(f"{uid}/1/text.html", page, mime_type="text/html",
                                                       task_uid=uid)
    worker.patch_status(task_id, {"phase": "Succeeded", "reason": "Completed", "completionTime": now(), "result": {
        "text": "<html>", "textArtifact": {"artifact": ref.name, "mimeType": ref.mime_type,
                                           "sizeBytes": ref.size_bytes, "sha256": ref.sha256}}})
    data = worker.wait_result(alice, task_id, lambda d: d.get("status") == "completed", "completed")
    (artifact,) = data["result"]["artifacts"]
    assert artifact["mime_type"] == "text/html"
    for status, headers, body in (curl(artifact["url"], tmp_path),
                                  _header_path(alice, artifact["url"])):
        assert status == 200 and body == page
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"] == 'attachment; filename="text.html"'
        assert headers["x-content-type-options"] == "nosniff" and headers["content-security-policy"] == "sandbox"


def _header_path(c, link: str) -> tuple[int, dict[str, str], bytes]:
    r = c.get(link.split("?", 1)[0])
    return r.status_code, dict(r.headers), r.content


def test_the_header_path_stays_as_it_was_with_the_same_safe_headers(signed_api, worker):
    alice, bob = signed_api.client("alice"), signed_api.client("bob")
    path = finished_image(alice, worker)["result"]["artifacts"][0]["url"].split("?", 1)[0]
    r = alice.get(path)
    assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["content-security-policy"] == "sandbox"
    assert r.headers["cache-control"] == "private, max-age=3600"
    refused = bob.get(path)
    assert refused.status_code == 404 and "alice" not in refused.text
    assert signed_api.client(None).get(path).status_code == 401


def test_a_public_url_setting_is_the_base_of_every_link(start_api, worker, tmp_path):
    api = start_api(api_link_keys=KEY_A, api_public_url="https://gentask.example.com/ai/")
    data = finished_image(api.client("alice"), worker)
    link = data["result"]["artifacts"][0]["url"]
    assert link.startswith(f"https://gentask.example.com/ai/api/v1/ai/task/{data['task_id']}/artifacts/")
    # the host is not signed: behind a proxy that strips /ai the same link opens the file
    assert curl(link.replace("https://gentask.example.com/ai", api.url), tmp_path)[0] == 200


def test_the_openapi_document_describes_both_ways_in(api):
    doc = api.client(None).get("/openapi.json").json()
    op = doc["paths"]["/api/v1/ai/task/{task_id}/artifacts/{name}"]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"task_id", "name", "uid", "expires", "signature"}
    assert {} in op["security"] and {"bearer": []} in op["security"]
    assert "403" in op["responses"] and "Signed links" in op["description"]
    assert "application/octet-stream" in op["responses"]["200"]["content"]
    view = doc["components"]["schemas"]["TaskView"]["properties"]
    assert {"created", "updated", "image_url", "video_url", "text_result", "id"} <= set(view)
