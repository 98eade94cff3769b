"""The CRD is generated from gentask.domain; the committed one must be what `make crds` writes."""

import subprocess
import sys

import yaml

from gentask.domain.crd import CRD_PATH, QUOTA_CRD_PATH, build_crd, build_quota_crd, render


def test_committed_crd_is_what_make_crds_writes():
    assert CRD_PATH.exists(), "crds/ has no CRD: run `make crds`"
    assert CRD_PATH.read_text() == render(), "crds/ is stale: run `make crds` and commit"
    assert QUOTA_CRD_PATH.read_text() == render("quota"), "crds/ is stale: run `make crds` and commit"


def test_check_mode_fails_on_a_stale_quota_crd(tmp_path):
    stale = tmp_path / "quota.yaml"
    stale.write_text(render("quota").replace("maximum: 100000", "maximum: 5"))
    result = subprocess.run([sys.executable, "-m", "gentask.domain.crd", "--check", "--quota-out", str(stale)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "make crds" in result.stderr and "quota.yaml" in result.stderr


def test_the_quota_crd_shows_used_over_limit_columns_and_a_short_name():
    crd = build_quota_crd()
    assert crd["metadata"]["name"] == "generationquotas.gentask.io" and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["gq"]
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Concurrent"] == ".status.concurrent" and columns["Today"] == ".status.today"
    assert columns["Month"] == ".status.month" and columns["User"] == ".spec.user"
    limits = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["limits"]["properties"]
    assert set(limits) == {"concurrent", "tasksPerDay", "costPerMonth"}
    assert limits["costPerMonth"]["properties"]["amount"]["pattern"] == "^[0-9]+(\\.[0-9]+)?$"


def test_check_mode_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "crd.yaml"
    stale.write_text(render().replace("maxLength: 8000", "maxLength: 9000"))
    result = subprocess.run([sys.executable, "-m", "gentask.domain.crd", "--check", "--out", str(stale)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "make crds" in result.stderr


def test_names_scope_and_columns():
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "generationtasks.gentask.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["gt", "gentask"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Type", "Provider", "Model", "Priority", "Phase", "Reason", "Attempts", "Age", "Cost", "Currency"]
    assert [c.get("priority", 0) for c in version["additionalPrinterColumns"]][-2:] == [1, 1]    # -o wide only


def test_schema_bounds_and_enums():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"type", "provider", "model", "prompt"}
    assert props["type"]["enum"] == ["image", "video", "text"]
    assert props["priority"]["enum"] == ["critical", "default", "low"] and props["priority"]["default"] == "default"
    assert props["prompt"]["minLength"] == 1 and props["prompt"]["maxLength"] == 8000
    assert (props["retries"]["minimum"], props["retries"]["maximum"]) == (0, 10)
    assert (props["timeoutSeconds"]["minimum"], props["timeoutSeconds"]["maximum"]) == (10, 86400)
    rules = {r["fieldPath"]: r for r in spec["x-kubernetes-validations"]}
    assert set(rules) == {f".{name}" for name in props}  # every field guarded, cancel by its own rule
    assert "cancel cannot be unset" in rules[".cancel"]["message"]
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"]
    assert "DeadlineExceeded" in status["reason"]["enum"]


def test_structural_no_refs_or_nulls():
    text = render()
    assert "$ref" not in text and "anyOf" not in text and "null" not in text
