"""Signed artifact links without a server: signing, verifying, rotation, expiry, the settings."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from gentask.api.errors import Forbidden
from gentask.api.signing import LinkSigner
from gentask.api.views import task_view
from gentask.config import SettingsError, load_settings

KEY, OLD = "k" * 32, "o" * 40
NOW = 1_800_000_000.0
RESULT = {"images": [{"url": "https://v/1.png", "artifact": "uid-1/1/image-0.png"},
                     {"artifact": "uid-1/1/image-1.png"}],
          "video": {"artifact": "uid-1/1/video.mp4"}}


def _params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_apply_signs_every_artifact_link_and_keeps_vendor_urls():
    view = task_view({"_id": "uid-1", "name": "img-a", "phase": "Succeeded", "result": RESULT})
    signed = LinkSigner([KEY], 3600).apply(view, "http://api.test:8080/", now=NOW)
    result = signed.result
    assert result is not None and view.result is not None
    urls = [a.url for a in result.artifacts]
    assert all(u.startswith("http://api.test:8080/api/v1/ai/task/img-a/artifacts/") for u in urls)
    assert result.image_urls == ["https://v/1.png", urls[1]] and result.image_url == "https://v/1.png"
    assert result.video_url == urls[2] == signed.video_url and signed.image_url == "https://v/1.png"
    assert view.result.artifacts[0].url.startswith("/api/")             # the cached view is left as it was
    params = _params(urls[0])
    assert params["uid"] == "uid-1" and int(params["expires"]) % 60 == 0
    assert NOW + 3600 <= int(params["expires"]) < NOW + 3660
    assert LinkSigner([KEY], 60).verify("img-a", "image-0.png", **params, now=NOW) == int(params["expires"])


def test_a_view_without_artifacts_is_returned_as_it_is():
    view = task_view({"_id": "u", "name": "txt-a", "phase": "Succeeded", "result": {"text": "hi"}})
    assert LinkSigner([KEY], 3600).apply(view, "http://x") is view


@pytest.mark.parametrize("change,words", [
    ({"task_id": "img-b"}, "does not match"), ({"name": "image-1.png"}, "does not match"),
    ({"uid": "uid-2"}, "does not match"), ({"expires": "1800003660"}, "does not match"),
    ({"signature": "A" * 43}, "does not match"), ({"signature": "é" * 43}, "does not match"),
    ({"expires": "-5"}, "not a Unix time"), ({"expires": "1e9"}, "not a Unix time"),
    ({"uid": None}, "lacks uid"), ({"signature": ""}, "lacks signature"),
])
def test_verify_refuses_any_change_with_a_403_that_says_why(change, words):
    signer = LinkSigner([KEY], 3600)
    link = dict(task_id="img-a", name="image-0.png", uid="uid-1", expires="1800003600",
                signature=signer.signature("uid-1", "img-a", "image-0.png", 1800003600))
    with pytest.raises(Forbidden, match=words) as err:
        signer.verify(**{**link, **change}, now=NOW)
    assert err.value.status == 403


def test_an_expired_link_says_when_it_expired():
    signer = LinkSigner([KEY], 3600)
    sig = signer.signature("uid-1", "img-a", "image-0.png", 1800000000)
    with pytest.raises(Forbidden, match=r"expired at 2027-01-15T08:00:00Z"):
        signer.verify("img-a", "image-0.png", "uid-1", "1800000000", sig, now=NOW)


def test_the_first_key_signs_and_every_key_verifies():
    old = LinkSigner([OLD], 3600)
    rotated = LinkSigner([KEY, OLD], 3600)
    sig = old.signature("u", "img-a", "f.png", 1800003600)
    assert rotated.verify("img-a", "f.png", "u", "1800003600", sig, now=NOW)
    assert rotated.signature("u", "img-a", "f.png", 1800003600) == LinkSigner([KEY], 1).signature(
        "u", "img-a", "f.png", 1800003600) != sig
    with pytest.raises(Forbidden, match="does not match"):
        LinkSigner([KEY], 3600).verify("img-a", "f.png", "u", "1800003600", sig, now=NOW)


def test_without_keys_a_process_key_is_made_and_never_shown():
    one, two = LinkSigner([], 3600), LinkSigner([], 3600)
    assert one.ephemeral and not LinkSigner([KEY], 3600).ephemeral
    assert one.signature("u", "t", "f", 1) != two.signature("u", "t", "f", 1)
    assert KEY not in repr(LinkSigner([KEY], 3600)) and "keys=1" in repr(LinkSigner([KEY], 3600))


def test_the_public_url_is_the_base_of_every_link():
    signer = LinkSigner.from_settings(load_settings(api_link_keys=KEY, api_public_url="https://ai.example.com/g/",
                                                    api_link_seconds="600"))
    link = signer.link("http://10.0.0.7:8080", "img-a", "u", "image 0.png", expires=1800000600)
    assert link.startswith("https://ai.example.com/g/api/v1/ai/task/img-a/artifacts/image%200.png?uid=u&")
    assert signer.seconds == 600


@pytest.mark.parametrize("values,words", [
    ({"api_link_keys": "short"}, "at least 32 characters each; entry 1 has 5"),
    ({"api_link_keys": f"{KEY},tiny"}, "entry 2 has 4"),
    ({"api_link_seconds": 30}, "GENTASK_API_LINK_SECONDS=30"),
    ({"api_link_seconds": 8 * 86400}, "less than or equal to 604800"),
    ({"api_public_url": "gentask.example.com"}, "absolute http:// or https:// URL"),
    ({"api_public_url": "https://x.example/?a=1"}, "without query or fragment"),
])
def test_bad_link_settings_say_what_is_accepted_and_never_echo_a_key(values, words):
    with pytest.raises(SettingsError, match=words) as err:
        load_settings(**values)
    assert "short" not in str(err.value) and "tiny" not in str(err.value)


def test_blank_settings_mean_unset_and_keys_are_secrets():
    settings = load_settings(api_link_keys=f" {KEY} , {OLD} ", api_public_url=" ")
    assert settings.link_keys == [KEY, OLD] and settings.api_public_url is None
    assert {KEY, OLD} <= set(settings.secrets())
    assert load_settings(api_link_keys="").link_keys == []
