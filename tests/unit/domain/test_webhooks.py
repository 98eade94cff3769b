"""Webhooks without I/O: which receivers may be called, which events a status shows, their ids,
the CloudEvent body and a signature the Standard Webhooks reference library accepts."""

import base64
import ipaddress
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from gentask.domain.task import GenerationTask
from gentask.domain.webhooks import (
    CallbackRefused,
    NotifyEvent,
    SigningKeyError,
    WebhookPolicy,
    address_problem,
    cloud_event,
    due_events,
    parse_keys,
    sign,
    url_problem,
)

OPEN = WebhookPolicy.parse([], allow_http=True)
KEY = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize("address,problem", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT shared address space"), ("100.127.255.254", "CGNAT shared address space"),
    ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"),
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("240.0.0.1", "reserved"),
    ("::ffff:127.0.0.1", "loopback (inside the IPv6 address ::ffff:7f00:1)"),
    ("::ffff:169.254.169.254", "link-local (inside the IPv6 address ::ffff:a9fe:a9fe)"),
    ("64:ff9b::a00:1", "private (inside the IPv6 address 64:ff9b::a00:1)"),
    ("2002:7f00:1::", "loopback (inside the IPv6 address 2002:7f00:1::)"),
    ("8.8.8.8", None), ("2606:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_non_global_addresses_are_refused_by_name(address, problem):
    assert address_problem(ipaddress.ip_address(address), OPEN) == problem


def test_a_cidr_on_the_allowlist_lets_its_addresses_through_and_a_host_only_itself():
    policy = WebhookPolicy.parse(["10.1.0.0/16", "127.0.0.1"], allow_http=True)
    assert address_problem(ipaddress.ip_address("10.1.2.3"), policy) is None
    assert address_problem(ipaddress.ip_address("10.2.0.1"), policy) == "private"
    assert url_problem("http://127.0.0.1:8080/hook", policy).port == 8080      # the host as written
    with pytest.raises(CallbackRefused, match="loopback"):
        url_problem("http://127.0.0.2/hook", policy)


@pytest.mark.parametrize("url,words", [
    ("ftp://example.com/x", "must be an http or https URL, not ftp"),
    ("http:///nohost", "has no host"),
    ("https://user:pw@example.com/", "must not carry credentials"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://a\x87b.example/", "not a valid host name"),           # found by the schemathesis run: a 500 before
])
def test_a_refused_url_says_why(url, words):
    with pytest.raises(CallbackRefused, match=words.replace(".", r"\.").replace("(", r"\(")):
        url_problem(url, OPEN, "callback_url")


def test_production_wants_https_unless_allowed():
    strict = WebhookPolicy.parse(["hooks.internal"], allow_http=False)
    with pytest.raises(CallbackRefused, match="must use https"):
        url_problem("http://example.com/hook", strict)
    assert url_problem("https://example.com/hook", strict).scheme == "https"
    assert url_problem("http://hooks.internal/hook", strict).host == "hooks.internal"


def test_a_bad_allowlist_entry_is_named():
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a CIDR"):
        WebhookPolicy.parse(["10.0.0.0/33"], allow_http=True)


def _task(status: dict, events: list[str] | None = None) -> GenerationTask:
    notify = {"url": "https://example.com/hook", **({"events": events} if events else {})}
    return GenerationTask.model_validate({
        "metadata": {"name": "img-1", "namespace": "ns", "uid": "u-1", "creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "a fox", "userID": "alice",
                 "notify": notify},
        "status": status})


RUNNING = {"phase": "Running", "reason": "Started", "message": "attempt 1 running on pod p", "attempts": 1,
           "startTime": "2026-12-01T10:00:02Z",
           "conditions": [
               {"type": "Scheduled", "status": "True", "reason": "JobCreated",
                "lastTransitionTime": "2026-12-01T10:00:01Z"},
               {"type": "Running", "status": "True", "reason": "Started", "message": "attempt 1 running on pod p",
                "lastTransitionTime": "2026-12-01T10:00:02Z"}]}


def test_the_events_a_status_shows_have_ids_that_do_not_change():
    every = [e.value for e in NotifyEvent]
    running = due_events(_task(RUNNING, every))
    assert [d.event.value for d in running] == ["queued", "running"]
    progressing = due_events(_task({**RUNNING, "message": "vendor job running 40% after 12s"}, every))
    assert [d.event.value for d in progressing] == ["queued", "running", "progress"]
    later = due_events(_task({**RUNNING, "message": "vendor job running 80% after 22s"}, every))
    assert progressing[2].id != later[2].id and progressing[:2] == later[:2]
    done = due_events(_task({**RUNNING, "phase": "Succeeded", "reason": "Completed",
                             "completionTime": "2026-12-01T10:00:09Z"}, every))
    assert [d.event.value for d in done] == ["queued", "running", "succeeded"]
    assert done[:2] == running                       # the same ids, whenever they are computed
    # the default: the outcome only
    assert [d.event.value for d in due_events(_task({**RUNNING, "phase": "Failed", "reason": "ContentRejected"}))] \
        == ["failed"]


def test_the_body_is_a_cloudevent_with_the_task_and_the_signature_verifies():
    task = _task({**RUNNING, "phase": "Succeeded", "reason": "Completed", "completionTime": "2026-12-01T10:00:09Z",
                  "result": {"images": [{"artifact": "u-1/1/image-0.png", "mimeType": "image/png"}]}})
    event = due_events(task)[0]
    body = cloud_event(task, event, datetime.now(UTC))
    headers = sign(parse_keys(KEY, "test"), event.id, int(datetime.now(UTC).timestamp()), body)
    doc = Webhook(KEY).verify(body, headers)
    assert doc["specversion"] == "1.0" and doc["id"] == event.id == headers["webhook-id"]
    assert doc["type"] == "io.gentask.task.succeeded" and doc["subject"] == "ns/img-1"
    assert doc["time"] == "2026-12-01T10:00:09Z" and doc["datacontenttype"] == "application/json"
    assert doc["data"]["task_id"] == "img-1" and doc["data"]["status"] == "completed"
    assert doc["data"]["result"]["image_url"] == "/api/v1/ai/task/img-1/artifacts/image-0.png"
    assert json.loads(body) == doc


def test_a_rotating_pair_of_keys_signs_twice_and_either_verifies():
    other = "whsec_" + base64.b64encode(b"o" * 32).decode().rstrip("=")
    headers = sign(parse_keys(f"{KEY} {other}", "test"), "evt_1", int(datetime.now(UTC).timestamp()), b"{}")
    assert headers["webhook-signature"].count("v1,") == 2
    Webhook(KEY).verify(b"{}", headers)
    Webhook(other).verify(b"{}", headers)


@pytest.mark.parametrize("value,words", [
    ("plain-secret-value", "expected whsec_<base64>"), ("whsec_!!!", "not base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "too short"), ("  ", "is empty"),
])
def test_a_bad_key_is_refused_without_showing_it(value, words):
    with pytest.raises(SigningKeyError, match=words) as caught:
        parse_keys(value, "the key")
    assert value.strip() == "" or value not in str(caught.value)
