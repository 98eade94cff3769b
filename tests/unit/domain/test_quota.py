"""The quota arithmetic: estimates by the price table, UTC days and months, the messages."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from gentask.domain.pricing import PriceTable
from gentask.domain.quota import (
    GenerationQuota,
    budget_message,
    daily_message,
    day_start,
    estimate_cost,
    money,
    month_start,
    next_day,
    next_month,
    ratio,
)
from gentask.domain.task import GenerationTaskSpec

TABLE = PriceTable()


def spec(**fields) -> GenerationTaskSpec:
    return GenerationTaskSpec.model_validate({"prompt": "a" * 40, **fields})


def test_an_image_estimate_is_images_times_the_price_of_their_size():
    got = estimate_cost(spec(type="image", provider="openai", model="dall-e-3",
                             params={"n": 2, "size": "1792x1024"}), TABLE)
    assert got is not None and (got.amount, got.currency) == (Decimal("0.16"), "USD")


def test_a_video_estimate_is_seconds_times_the_price_and_5_seconds_without_a_duration():
    assert estimate_cost(spec(type="video", provider="openai", model="sora-2", params={"duration": 4}),
                         TABLE).amount == Decimal("0.4")
    assert estimate_cost(spec(type="video", provider="openai", model="sora-2"), TABLE).amount == Decimal("0.5")
    seedance = estimate_cost(spec(type="video", provider="volcengine", model="doubao-seedance-1-0-pro-250528",
                                  params={"duration": 5}), TABLE)
    assert seedance.amount == Decimal("0.015") * 21600 * 5 / 1000 and seedance.currency == "CNY"


def test_a_text_estimate_is_max_tokens_at_the_output_price_plus_the_prompt_at_the_input_price():
    got = estimate_cost(spec(type="text", provider="openai", model="gpt-4.1", params={"maxTokens": 1000}), TABLE)
    prompt_tokens = 40 // 4 + 1
    assert got.amount == (Decimal("0.002") * prompt_tokens / 1000 + Decimal("0.008")).quantize(Decimal("0.000001"))


def test_a_model_without_a_price_has_no_estimate():
    assert estimate_cost(spec(type="text", provider="fake", model="fake-text"), PriceTable({})) is not None
    table = PriceTable()
    table.prices.pop(("fake", "fake-text"))
    assert estimate_cost(spec(type="text", provider="fake", model="fake-text"), table) is None


def test_days_and_months_are_utc_and_roll_over_the_year():
    now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert day_start(now) == datetime(2026, 12, 31, tzinfo=UTC)
    assert month_start(now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_day(now) == datetime(2027, 1, 1, tzinfo=UTC) and next_month(now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month(datetime(2027, 1, 31, 12, tzinfo=UTC)) == datetime(2027, 2, 1, tzinfo=UTC)


def test_the_messages_name_the_quota_and_what_is_left():
    assert budget_message("team-budget", spent=Decimal("4.6"), limit=Decimal("5"), currency="USD",
                          estimate=Decimal("0.6")).startswith(
        "quota team-budget: 0.40 USD of 5.00 USD left this month (UTC); this task would cost about 0.60 USD")
    assert budget_message("b", spent=Decimal("7"), limit=Decimal("5"), currency="USD",
                          estimate=Decimal("1")).startswith("quota b: 0.00 USD of 5.00 USD left")
    assert daily_message("daily", used=100, limit=100).startswith("quota daily: 0 of 100 tasks left today (UTC)")
    assert money(Decimal("1.2")) == "1.20" and money(Decimal("0.123456")) == "0.123456" and money(Decimal(3)) == "3.00"
    assert ratio(2, 2) == "2/2" and ratio(5, None) == "5/-"


def test_a_quota_applies_to_its_namespace_and_its_user_only():
    everyone = GenerationQuota.model_validate({"metadata": {"name": "q", "namespace": "a"}, "spec": {"limits": {}}})
    alice = GenerationQuota.model_validate({"metadata": {"name": "q", "namespace": "a"}, "spec": {"user": "alice"}})
    assert everyone.applies("a", "bob") and not everyone.applies("b", "bob")
    assert alice.applies("a", "alice") and not alice.applies("a", "bob")


def test_limits_are_bounded_and_amounts_are_decimal_strings():
    for bad in ({"concurrent": -1}, {"costPerMonth": {"amount": "1e3", "currency": "USD"}},
                {"costPerMonth": {"amount": "5", "currency": "usd"}}, {"tasksPerday": 3}):
        with pytest.raises(ValidationError):
            GenerationQuota.model_validate({"spec": {"limits": bad}})
