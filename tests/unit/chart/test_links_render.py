"""The chart's signed-link settings as `helm template` renders them: the key Secret and the API's env."""

from __future__ import annotations

import base64

from tests.support.helm import CHART, KUBE_VERSION, helm, render
from tests.unit.chart.test_render import by_kind, env_of, one


def _key(docs: list[dict]) -> str:
    secret = one(docs, "Secret", "api-links")
    return base64.b64decode(secret["data"]["GENTASK_API_LINK_KEYS"]).decode()


def test_the_chart_makes_a_random_link_key_the_api_reads_by_reference():
    docs = render()
    secret = one(docs, "Secret", "api-links")
    assert secret["metadata"]["name"] == "t-gentask-api-links" and secret["metadata"]["namespace"] == "gentask"
    assert secret["type"] == "Opaque" and list(secret["data"]) == ["GENTASK_API_LINK_KEYS"]
    key = _key(docs)
    assert len(key) == 64 and key.isalnum()                  # GENTASK_API_LINK_KEYS wants 32 characters or more
    assert _key(render()) != key                               # random at each install (kept on upgrades: lookup)
    env = env_of(one(docs, "Deployment", "api"))
    assert env["GENTASK_API_LINK_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "t-gentask-api-links",
                                                                         "key": "GENTASK_API_LINK_KEYS"}
    assert env["GENTASK_API_LINK_SECONDS"]["value"] == "3600" and "GENTASK_API_PUBLIC_URL" not in env
    assert "GENTASK_API_LINK_KEYS" not in env_of(one(docs, "Deployment", "operator"))


def test_an_existing_secret_a_validity_and_a_public_url():
    docs = render("--set", "api.links.existingSecret=my-links", "--set", "api.links.secretKey=keys",
                  "--set", "api.links.seconds=600", "--set", "api.links.publicURL=https://ai.example.com")
    assert "t-gentask-api-links" not in [s["metadata"]["name"] for s in by_kind(docs, "Secret")]
    env = env_of(one(docs, "Deployment", "api"))
    assert env["GENTASK_API_LINK_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "my-links", "key": "keys"}
    assert env["GENTASK_API_LINK_SECONDS"]["value"] == "600"
    assert env["GENTASK_API_PUBLIC_URL"]["value"] == "https://ai.example.com"
    assert "t-gentask-api-links" not in [s["metadata"]["name"] for s in by_kind(render("--set", "api.enabled=false"),
                                                                                 "Secret")]


def test_the_schema_refuses_bad_link_values():
    for bad in (["--set", "api.links.seconds=10"], ["--set", "api.links.seconds=9999999"],
                ["--set", "api.links.publicURL=gentask.example.com"],
                ["--set", "api.links.publicURL=https://x.example/?q=1"], ["--set", "api.links.key=abc"],
                ["--set", "api.links.secretKey="]):
        proc = helm("template", "t", str(CHART), "--kube-version", KUBE_VERSION, *bad, check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, f"{bad} was accepted:\n{proc.stderr}"
