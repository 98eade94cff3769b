"""The chart's webhook settings: the receiver rules for the operator and the API, the default
signing key (a Secret the operator alone reads), and the operator's get on task Secrets."""

from __future__ import annotations

import base64

from gentask.domain.webhooks import parse_keys
from tests.support.helm import render
from tests.unit.chart.test_render import by_kind, env_of, one


def _secret_rules(role: dict) -> list[dict]:
    return [r for r in role["rules"] if "secrets" in r["resources"]]


def test_the_operator_and_the_api_get_the_rules_and_only_the_operator_the_key():
    docs = render("--set", "webhooks.allow={hooks.internal,10.20.0.0/16}", "--set", "webhooks.horizon=6h")
    operator, api = env_of(one(docs, "Deployment", "operator")), env_of(one(docs, "Deployment", "api"))
    for env in (operator, api):
        assert env["GENTASK_WEBHOOK_ALLOW"]["value"] == "hooks.internal,10.20.0.0/16"
        assert env["GENTASK_WEBHOOK_ALLOW_HTTP"]["value"] == "false"
    assert operator["GENTASK_WEBHOOK_HORIZON"]["value"] == "6h"
    ref = operator["GENTASK_WEBHOOK_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]
    assert "GENTASK_WEBHOOK_SIGNING_KEY" not in api
    secret = one(docs, "Secret", "webhook-signing-key")
    assert ref == {"name": secret["metadata"]["name"], "key": "GENTASK_WEBHOOK_SIGNING_KEY"}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["GENTASK_WEBHOOK_SIGNING_KEY"]).decode()
    assert len(parse_keys(key, "the chart's key")[0]) == 32          # whsec_ and 32 random bytes


def test_an_existing_key_secret_is_used_instead_of_one_made():
    docs = render("--set", "webhooks.signingKey.existingSecret=my-hooks", "--set", "webhooks.signingKey.secretKey=k")
    assert not [s for s in by_kind(docs, "Secret") if "webhook" in s["metadata"]["name"]]
    ref = env_of(one(docs, "Deployment", "operator"))["GENTASK_WEBHOOK_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-hooks", "key": "k"}
    off = render("--set", "webhooks.signingKey.create=false")
    assert "GENTASK_WEBHOOK_SIGNING_KEY" not in env_of(one(off, "Deployment", "operator"))


def test_the_operator_may_get_task_secrets_and_no_more_or_not_at_all():
    role = one(render(), "Role", "operator")
    assert _secret_rules(role) == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    named = one(render("--set", "webhooks.secretNames={hook-key}"), "Role", "operator")
    assert _secret_rules(named)[0]["resourceNames"] == ["hook-key"]
    assert _secret_rules(one(render("--set", "webhooks.readTaskSecrets=false"), "Role", "operator")) == []
    for other in by_kind(render(), "Role") + by_kind(render(), "ClusterRole"):
        if "operator" not in other["metadata"]["name"]:
            assert not _secret_rules(other), other["metadata"]["name"]
