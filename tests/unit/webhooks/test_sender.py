"""The webhook sender and the address check against real sockets on loopback: what each answer
means for a retry, no redirect followed, and the connection going only to the checked address."""

from __future__ import annotations

import email.utils
import ipaddress
import time

import pytest

from gentask.domain.webhooks import CallbackRefused, WebhookPolicy, url_problem
from gentask.webhooks.address import Vetted, vet
from gentask.webhooks.sender import WebhookSender, retry_after
from tests.support.webhooks import Listener, Receiver

ALLOW_LOOPBACK = WebhookPolicy.parse(["127.0.0.1"], allow_http=True)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


async def _send(vetted: Vetted, body: bytes = b"{}"):
    sender = WebhookSender()
    try:
        return await sender.send(vetted, {"webhook-id": "evt_1"}, body)
    finally:
        await sender.close()


async def test_answers_become_delivered_retried_or_given_up(receiver):
    vetted = await vet(receiver.url, ALLOW_LOOPBACK)
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    receiver.script = [(204, {}), (503, {}), (429, {"Retry-After": date}), (404, {}), (410, {})]
    ok, busy, limited, missing, gone = [await _send(vetted) for _ in range(5)]
    assert ok.delivered and ok.result == "2xx"
    assert not busy.delivered and busy.retryable and busy.error == "the receiver answered HTTP 503"
    assert limited.retryable and limited.result == "429" and 25 < limited.retry_after <= 31
    assert not missing.retryable and "not retried" in missing.error
    assert not gone.retryable
    assert [r.headers["webhook-id"] for r in receiver.requests()] == ["evt_1"] * 5


async def test_a_redirect_is_not_followed(receiver):
    target = Listener()                 # where the redirect points: it must see nothing
    try:
        receiver.script = [(307, {"Location": f"http://127.0.0.1:{target.port}/elsewhere"})]
        outcome = await _send(await vet(receiver.url, ALLOW_LOOPBACK))
        assert not outcome.delivered and not outcome.retryable and "redirect" in outcome.error
        assert target.connections() == 0
    finally:
        target.close()


async def test_nothing_listening_is_a_connection_error_to_retry():
    closed = Listener()
    port = closed.port
    closed.close()
    outcome = await _send(await vet(f"http://127.0.0.1:{port}/hook", ALLOW_LOOPBACK))
    assert not outcome.delivered and outcome.retryable and outcome.result == "connection"


async def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(receiver):
    # a name no resolver knows, checked (here: by hand) to be 127.0.0.1: the request still arrives,
    # so the sender connected to the checked address and never asked a resolver about the name
    target = url_problem(f"http://receiver.invalid:{receiver.port}/hook", ALLOW_LOOPBACK)
    outcome = await _send(Vetted(target, (ipaddress.ip_address("127.0.0.1"),)), b'{"x": 1}')
    assert outcome.delivered, outcome
    [got] = receiver.requests()
    assert got.body == b'{"x": 1}' and got.headers["host"] == f"receiver.invalid:{receiver.port}"


async def test_a_name_that_resolves_to_loopback_is_refused_unless_the_allowlist_names_it():
    with pytest.raises(CallbackRefused, match="host localhost resolves to .*loopback"):
        await vet("http://localhost:9/hook", ALLOW_LOOPBACK)
    allowed = await vet("http://localhost:9/hook", WebhookPolicy.parse(["localhost"], allow_http=True))
    assert all(ip.is_loopback for ip in allowed.addresses)
    cidr = await vet("http://localhost:9/hook", WebhookPolicy.parse(["127.0.0.0/8", "::1/128"], allow_http=True))
    assert cidr.addresses


def test_retry_after_reads_seconds_and_dates():
    assert retry_after("7") == 7.0
    assert retry_after(email.utils.formatdate(1000.0 + 60, usegmt=True), now=1000.0) == 60.0
    assert retry_after("soon") is None and retry_after(None) is None


@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "017700000001", "[fe80::1%25eth0]",
                                  "[::ffff:7f00:1]"])
async def test_loopback_in_any_spelling_is_refused(host):
    with pytest.raises(CallbackRefused, match="loopback|link-local"):
        await vet(f"http://{host}:9/hook", ALLOW_LOOPBACK)
