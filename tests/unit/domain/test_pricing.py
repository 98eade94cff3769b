"""The price table: every catalog model priced, exact decimal arithmetic, overrides refused with
the model and field named, and the usage endpoint's totals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gentask.config import SettingsError, load_settings
from gentask.domain import catalog
from gentask.domain.pricing import (
    PRICES,
    Attempt,
    Price,
    PriceError,
    PriceTable,
    amount_text,
    micros,
    missing_prices,
    normalize_usage,
    parse_overrides,
    task_cost,
    usage_summary,
)
from gentask.domain.task import GenerationTaskStatus, TaskType


def test_every_catalog_model_has_a_price_with_a_date_and_a_source():
    assert missing_prices() == []
    for key, price in PRICES.items():
        assert key in catalog.CATALOG, key
        assert len(price.currency) == 3 and price.as_of and price.source, key
        datetime.strptime(price.as_of, "%Y-%m-%d")


def test_prices_are_exact_decimals_rounded_once_per_attempt_half_up():
    price = Price("CNY", "2026-12-01", "test", per_1k_input_tokens=Decimal("0.0008"),
                  per_1k_output_tokens=Decimal("0.008"))
    # 7 input tokens and 13 output tokens: 0.0000056 + 0.000104 = 0.0001096 -> 0.00011
    assert price.cost({"input_tokens": 7, "output_tokens": 13}) == Decimal("0.000110")
    # a float sum would drift: 0.1 + 0.2 != 0.3; ten images at 0.1 are exactly 1
    assert Price("USD", "d", "s", per_image=Decimal("0.1")).cost({"images": 10}) == Decimal("1")
    assert micros("0.259") == 259_000 and micros(Decimal("0.0000005")) == 1
    assert amount_text(Decimal("0.200000")) == "0.2" and amount_text(Decimal(0)) == "0"
    assert amount_text(Decimal("12")) == "12"


def test_per_size_image_prices_and_per_second_video():
    dalle = PRICES[("openai", "dall-e-3")]
    assert dalle.cost({"images": 1}, "1792x1024") == Decimal("0.08")
    assert dalle.cost({"images": 1}, "1024x1024") == Decimal("0.04")
    assert PRICES[("openai", "sora-2")].cost({"video_seconds": 8}) == Decimal("0.8")


def test_usage_is_the_vendors_where_reported_else_what_was_produced():
    assert normalize_usage(TaskType.IMAGE, {"generated_images": 2, "output_tokens": 8192}, images=5) == \
        {"images": 2, "output_tokens": 8192}
    assert normalize_usage(TaskType.IMAGE, {}, images=3) == {"images": 3}
    assert normalize_usage(TaskType.TEXT, {"prompt_tokens": 4, "completion_tokens": 9}) == \
        {"input_tokens": 4, "output_tokens": 9}
    assert normalize_usage(TaskType.TEXT, {}, words=(3, 20)) == {"input_tokens": 3, "output_tokens": 20}
    assert normalize_usage(TaskType.VIDEO, {"completion_tokens": 100, "total_tokens": 100}, video_seconds=5) == \
        {"video_seconds": 5, "video_tokens": 100}
    assert normalize_usage(TaskType.VIDEO, {}, video_seconds=4) == {"video_seconds": 4}


def test_task_cost_sums_attempts_per_currency_and_the_status_takes_it():
    attempts = [Attempt("volcengine", "doubao-seedance-1-0-pro-250528", False, {"video_tokens": 10_000},
                        reason="ContentRejected", vendor_task_id="cgt-1"),
                Attempt("openai", "sora-2", True, {"video_seconds": 4})]
    out = task_cost(attempts, PriceTable(), primary=("volcengine", "doubao-seedance-1-0-pro-250528"))
    assert out["cost"]["totals"] == [{"amount": "0.15", "currency": "CNY"}, {"amount": "0.4", "currency": "USD"}]
    assert "amount" not in out["cost"]              # two currencies: no single total
    assert out["usage"] == {"videoTokens": 10_000, "videoSeconds": 4}
    status = GenerationTaskStatus.model_validate(out)
    assert status.cost is not None and status.cost.attempts[0].vendor_task_id == "cgt-1"
    assert status.model_dump(by_alias=True, exclude_none=True)["cost"]["attempts"][0]["vendorTaskID"] == "cgt-1"


def test_a_task_that_reached_no_vendor_costs_zero_in_its_models_currency():
    out = task_cost([], PriceTable(), primary=("openai", "gpt-4.1"))
    assert out["cost"] == {"amount": "0", "currency": "USD", "totals": [{"amount": "0", "currency": "USD"}],
                           "attempts": []}


def test_overrides_change_only_the_fields_given_and_say_where_they_came_from():
    table = PriceTable.from_text('{"volcengine/doubao-seedream-4-0-250828": {"perImage": "0.18"}, '
                                 '"fake/fake-text": {"per1kOutputTokens": 0.5}}')
    seedream = table.get("volcengine", "doubao-seedream-4-0-250828")
    assert seedream.per_image == Decimal("0.18") and seedream.currency == "CNY"
    assert seedream.source.startswith("GENTASK_PRICES")
    assert table.get("fake", "fake-text").per_1k_output_tokens == Decimal("0.5")     # a JSON number, exact
    assert table.get("fake", "fake-text").per_1k_input_tokens == Decimal("0.001")


@pytest.mark.parametrize("text,words", [
    ('{"volcengine/no-such-model": {"perImage": "1"}}', ["'volcengine/no-such-model'", "not a model of the catalog"]),
    ('{"fake/fake-image": {"perPicture": "1"}}', ["'fake/fake-image'].perPicture", "accepted fields", "perImage"]),
    ('{"fake/fake-image": {"perImage": "cheap"}}', ["'fake/fake-image'].perImage", "'cheap'", "decimal string"]),
    ('{"fake/fake-image": {"perImage": "-1"}}', ["perImage", "0 or more"]),
    ('{"fake/fake-image": {"currency": "dollars"}}', ["currency", "ISO 4217"]),
    ('{"fake/fake-image": "0.1"}', ["'fake/fake-image'", "expected an object of fields"]),
    ('{"fake/fake-image": {"perImageBySize": {"64x64": "x"}}}', ["perImageBySize.64x64", "'x'"]),
    ('["fake/fake-image"]', ["expected a JSON object"]),
    ("{not json", ["not valid JSON"]),
])
def test_a_bad_override_is_refused_naming_the_model_and_the_field(text, words):
    with pytest.raises(PriceError) as refused:
        parse_overrides(text)
    for word in words:
        assert word in str(refused.value)
    with pytest.raises(SettingsError) as at_start:          # and the settings refuse to start with it
        load_settings(prices=text)
    assert "GENTASK_PRICES" in str(at_start.value) and words[0] in str(at_start.value)


def test_overrides_may_come_from_a_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"fake/fake-video": {"perSecond": "0.07"}}')
    settings = load_settings(prices=str(path))
    assert settings.price_table().get("fake", "fake-video").per_second == Decimal("0.07")
    with pytest.raises(SettingsError, match="not JSON and not a readable file"):
        load_settings(prices=str(tmp_path / "missing.json"))


def _record(user: str, day: int, attempts: list[tuple[str, str, str, str, dict]]) -> dict:
    entries = [{"provider": p, "model": m, "amount": a, "currency": c, "usage": u, "outcome": "Succeeded"}
               for p, m, a, c, u in attempts]
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[e["currency"]] = totals.get(e["currency"], Decimal(0)) + Decimal(e["amount"])
    usage: dict[str, int] = {}
    for e in entries:
        for k, v in e["usage"].items():
            usage[k] = usage.get(k, 0) + v
    return {"userID": user, "completionTime": datetime(2026, 12, day, 12, tzinfo=UTC), "usage": usage,
            "cost": {"attempts": entries, "totals": [{"amount": str(v), "currency": c} for c, v in totals.items()]}}


def test_usage_summary_groups_attempts_by_model_and_provider_and_tasks_by_day():
    records = [
        _record("u", 1, [("fake", "fake-image", "0.02", "XTS", {"images": 2})]),
        _record("u", 1, [("volcengine", "doubao-seedance-1-0-pro-250528", "0.7722", "CNY", {"videoTokens": 51480}),
                         ("fake", "fake-video", "0.1", "XTS", {"videoSeconds": 2})]),
        _record("u", 2, [("fake", "fake-image", "0.01", "XTS", {"images": 1})]),
    ]
    by_model = usage_summary(records, "model")
    groups = {g["key"]: g for g in by_model["groups"]}
    assert groups["fake/fake-image"]["tasks"] == 2 and groups["fake/fake-image"]["usage"] == {"images": 3}
    assert groups["fake/fake-image"]["cost"] == [{"amount": "0.03", "currency": "XTS"}]
    assert groups["volcengine/doubao-seedance-1-0-pro-250528"]["cost"] == [{"amount": "0.7722", "currency": "CNY"}]
    assert by_model["totals"] == [{"amount": "0.7722", "currency": "CNY"}, {"amount": "0.13", "currency": "XTS"}]
    assert by_model["tasks"] == 3
    by_provider = {g["key"]: g for g in usage_summary(records, "provider")["groups"]}
    assert by_provider["fake"]["tasks"] == 3 and by_provider["volcengine"]["tasks"] == 1
    by_day = usage_summary(records, "day")["groups"]
    assert [(g["day"], g["tasks"], g["cost"]) for g in by_day] == [
        ("2026-12-01", 2, [{"amount": "0.7722", "currency": "CNY"}, {"amount": "0.12", "currency": "XTS"}]),
        ("2026-12-02", 1, [{"amount": "0.01", "currency": "XTS"}])]
    with pytest.raises(ValueError, match="group_by 'week' is not accepted"):
        usage_summary(records, "week")


def test_docs_pricing_lists_every_price_as_the_code_has_it():
    page = (Path(__file__).resolve().parents[3] / "docs" / "pricing.md").read_text()
    for (provider, model), price in PRICES.items():
        row = f"| `{provider}/{model}` | {price.describe()} | {price.as_of} | {price.source} |"
        assert row in page, f"docs/pricing.md lacks or misstates {provider}/{model}: expected {row}"
