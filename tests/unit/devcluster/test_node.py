"""Pure parts of the process node: $(VAR) expansion, taints, image mapping."""

import argparse
import sys
from pathlib import Path

import pytest

from devcluster.node import ImageMap, expand, parse_taint


def test_expansion_as_kubernetes_does_it():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_taints_parse_like_kubectl():
    assert parse_taint("k=v:NoSchedule") == {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert parse_taint("k:NoExecute") == {"key": "k", "effect": "NoExecute"}
    with pytest.raises(argparse.ArgumentTypeError, match="NoSchedule, PreferNoSchedule, NoExecute"):
        parse_taint("k=v:Sometimes")


def test_images_map_to_the_local_environment(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    images = ImageMap()
    assert images.resolve("ghcr.io/x/gentask:0.1").entrypoint == [f"{venv_bin}/gentask"]
    assert images.resolve("python:3.11-slim").path == [venv_bin] and images.resolve("busybox").entrypoint == []
    custom = tmp_path / "images.yaml"
    custom.write_text("- image: 'acme/*'\n  path: [/opt/acme/bin]\n  env: {ACME: '1'}\n  entrypoint: [acme]\n")
    rule = ImageMap.load(custom).resolve("acme/tool:1")
    assert rule.path == ["/opt/acme/bin"] and rule.env == {"ACME": "1"} and rule.entrypoint == ["acme"]
