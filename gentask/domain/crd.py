"""Render the GenerationTask and GenerationQuota CustomResourceDefinitions from the pydantic models.

`python -m gentask.domain.crd` (what `make crds` runs) writes crds/generationtasks.gentask.io.yaml
and crds/generationquotas.gentask.io.yaml; `--check` exits 1 when a committed file differs from what
would be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from gentask.domain import quota
from gentask.domain.reasons import REASONS
from gentask.domain.task import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    GenerationTaskSpec,
    GenerationTaskStatus,
)

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
CRD_PATH = CRD_DIR / f"{PLURAL}.{GROUP}.yaml"
QUOTA_CRD_PATH = CRD_DIR / f"{quota.PLURAL}.{GROUP}.yaml"
_DROP = {"title", "additionalProperties"}

# Spec fields that are always present once the API server has applied the defaults.
_ALWAYS_SET = {"type", "provider", "model", "prompt", "priority", "retries", "timeoutSeconds",
               "ttlSecondsAfterFinished", "cancel"}


def _structural(schema: dict[str, Any], defs: dict[str, Any], keep_defaults: bool) -> dict[str, Any]:
    """Turn pydantic's JSON Schema into a structural OpenAPI v3 schema (no refs, no null unions)."""
    if "$ref" in schema:
        outer = {k: v for k, v in schema.items() if k != "$ref"}
        return _structural({**defs[schema["$ref"].rsplit("/", 1)[1]], **outer}, defs, keep_defaults)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot render a union of {len(options)} types as a structural schema")
        outer = {k: v for k, v in schema.items() if k not in ("anyOf",)}
        return _structural({**options[0], **outer}, defs, keep_defaults)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "default":
            if keep_defaults and value not in (None, "", [], {}):
                out["default"] = value
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out["properties"] = {n: _structural(p, defs, keep_defaults) for n, p in value.items()}
        elif key == "items":
            out["items"] = _structural(value, defs, keep_defaults)
        elif key == "minItems" and value == 0:
            continue
        else:
            out[key] = value
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(schema["additionalProperties"], defs, keep_defaults)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _schema(model: type[BaseModel], keep_defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}), keep_defaults)


def _immutability_rules(spec: dict[str, Any]) -> list[dict[str, str]]:
    rules = []
    for name in spec["properties"]:
        if name == "cancel":
            continue
        if name in _ALWAYS_SET:
            rule = f"self.{name} == oldSelf.{name}"
        else:
            rule = (f"has(self.{name}) == has(oldSelf.{name}) && "
                    f"(!has(self.{name}) || self.{name} == oldSelf.{name})")
        rules.append({"rule": rule, "fieldPath": f".{name}", "reason": "FieldValueForbidden",
                      "message": f"spec.{name} is immutable after creation; only spec.cancel may change "
                                 "(create a new GenerationTask instead)"})
    rules.append({"rule": "!oldSelf.cancel || self.cancel", "fieldPath": ".cancel",
                  "reason": "FieldValueForbidden", "message": "spec.cancel cannot be unset once true"})
    return rules


def build_crd() -> dict[str, Any]:
    """The CRD manifest: structural schemas of spec and status, immutability rules, printer columns."""
    spec = _schema(GenerationTaskSpec, keep_defaults=True)
    spec["x-kubernetes-validations"] = _immutability_rules(spec)
    status = _schema(GenerationTaskStatus, keep_defaults=False)
    status["properties"]["reason"]["enum"] = list(REASONS)
    status["properties"]["reason"]["description"] = "one word from this vocabulary: " + "; ".join(
        f"{k}: {v}" for k, v in REASONS.items())
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["maxItems"] = 16
    status["properties"]["providerFailures"]["maxItems"] = 64
    spec["properties"]["notify"]["properties"]["events"]["x-kubernetes-list-type"] = "set"   # each event once
    status["properties"]["result"]["properties"]["images"]["maxItems"] = 16
    columns = [
        ("Type", "string", ".spec.type", ""), ("Provider", "string", ".spec.provider", ""),
        ("Model", "string", ".spec.model", ""), ("Priority", "string", ".spec.priority", ""),
        ("Phase", "string", ".status.phase", ""), ("Reason", "string", ".status.reason", ""),
        ("Attempts", "integer", ".status.attempts", ""), ("Age", "date", ".metadata.creationTimestamp", ""),
    ]
    wide = [("Cost", "string", ".status.cost.amount", ""), ("Currency", "string", ".status.cost.currency", "")]
    return _crd(
        plural=PLURAL, kind=KIND, singular=SINGULAR, short_names=SHORT_NAMES, categories=["gentask"],
        columns=columns, wide=wide, spec=spec, status=status,
        description="An image, a video or a text to generate with an AI provider, run as a Job.",
        # Field selectors the API server evaluates itself: the operator and the worker pool
        # watch only unfinished tasks (status.phase!=Succeeded,...), however many have finished.
        version_extra={"selectableFields": [{"jsonPath": p} for p in SELECTABLE_FIELDS]},
        root_extra={"required": ["spec"], "x-kubernetes-validations": [{
            "rule": "self.metadata.name.size() <= 63",
            "message": "metadata.name must be at most 63 characters: it also names the task's Job",
        }]},
    )


def _crd(*, plural: str, kind: str, singular: str, short_names: list[str], categories: list[str] | None,
         columns: list[tuple[str, str, str, str]], wide: list[tuple[str, str, str, str]], spec: dict[str, Any],
         status: dict[str, Any], description: str, version_extra: dict[str, Any] | None = None,
         root_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The skeleton both CRDs share: one namespaced v1alpha1 version with a status subresource,
    printer columns (name, type, jsonPath, description; `wide` ones only with -o wide) and the
    object schema of spec and status."""
    names: dict[str, Any] = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": singular,
                             "shortNames": short_names}
    if categories:
        names["categories"] = categories
    printer: list[dict[str, Any]] = [{"name": n, "type": t, "jsonPath": p, **({"description": d} if d else {})}
                                     for n, t, p, d in columns]
    printer += [{"name": n, "type": t, "jsonPath": p, "priority": 1, **({"description": d} if d else {})}
                for n, t, p, d in wide]
    root_extra = dict(root_extra or {})
    schema: dict[str, Any] = {"type": "object", "description": description}
    if "required" in root_extra:
        schema["required"] = root_extra.pop("required")
    schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                            "metadata": {"type": "object"}, "spec": spec, "status": status}
    schema.update(root_extra)
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True, "subresources": {"status": {}},
                               "additionalPrinterColumns": printer, **(version_extra or {}),
                               "schema": {"openAPIV3Schema": schema}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/name": "gentask"}},
        "spec": {"group": GROUP, "scope": "Namespaced", "names": names, "versions": [version]},
    }


SELECTABLE_FIELDS = (".status.phase", ".spec.priority", ".spec.userID")


def build_quota_crd() -> dict[str, Any]:
    """The GenerationQuota CRD: spec and status schemas, used/limit printer columns."""
    spec = _schema(quota.GenerationQuotaSpec, keep_defaults=True)
    status = _schema(quota.GenerationQuotaStatus, keep_defaults=False)
    columns = [
        ("User", "string", ".spec.user", "whose tasks: absent = the whole namespace"),
        ("Concurrent", "string", ".status.concurrent", "tasks running now / the limit"),
        ("Waiting", "integer", ".status.used.waiting", "tasks waiting for room (QuotaWait)"),
        ("Today", "string", ".status.today", "tasks admitted this UTC day / the limit"),
        ("Month", "string", ".status.month", "cost this UTC month (with running estimates) / the limit"),
        ("Age", "date", ".metadata.creationTimestamp", ""),
    ]
    # no category "gentask": it is also the tasks' short name, and `kubectl get gentask NAME`
    # would then look for a quota of that name too (found by test_resource.py)
    return _crd(
        plural=quota.PLURAL, kind=quota.KIND, singular=quota.SINGULAR, short_names=quota.SHORT_NAMES,
        categories=None, columns=columns, wide=[], spec=spec, status=status,
        description="Limits on the GenerationTasks of a namespace or of one of its users: tasks at "
                    "once, tasks a day, cost a month (docs/tenants.md, Quotas).",
    )


def render(which: str = "task") -> str:
    """A CRD as the YAML that crds/ holds, with its do-not-edit header: "task" or "quota"."""
    source, crd = (("task.py", build_crd()) if which == "task" else ("quota.py", build_quota_crd()))
    header = f"# Generated by `make crds` from gentask/domain/{source}. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    """`gentask crds [--check] [--out PATH]`: write the CRD, or with --check exit 1 when it is stale."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed CRD is stale")
    parser.add_argument("--out", type=Path, default=CRD_PATH, help="where the GenerationTask CRD goes")
    parser.add_argument("--quota-out", type=Path, default=QUOTA_CRD_PATH, help="where the GenerationQuota CRD goes")
    args = parser.parse_args(argv)
    stale = 0
    for out, text in ((args.out, render("task")), (args.quota_out, render("quota"))):
        if args.check:
            if not out.exists() or out.read_text() != text:
                print(f"{out} is stale: run `make crds` and commit the result", file=sys.stderr)
                stale = 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
