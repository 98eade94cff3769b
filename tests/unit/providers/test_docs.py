"""docs/providers.md keeps up with the code: every model of the catalog, every fake failure kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from gentask.domain.catalog import MODELS
from gentask.providers.fake import FAULTS

PAGE = Path(__file__).resolve().parents[3] / "docs" / "providers.md"


@pytest.mark.parametrize("entry", MODELS, ids=lambda m: f"{m.provider}/{m.model}")
def test_every_catalog_model_is_documented_with_its_status(entry):
    row_start = f"| {entry.provider} | `{entry.model}` |"
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith(row_start)]
    assert len(rows) == 1, f"{entry.provider}/{entry.model} is missing from docs/providers.md"
    assert (f"retired {entry.retired}" in rows[0]) == bool(entry.retired)


def test_every_fake_failure_kind_is_documented():
    text = PAGE.read_text()
    assert all(f"`{kind}`" in text for kind in FAULTS)
