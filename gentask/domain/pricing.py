"""Prices of the catalog's models, and what a task's usage costs by them.

Every (provider, model) of the catalog has one `Price`: per image (optionally per size), per 1k
input and output tokens, per second of video, per 1k video tokens (Seedance bills tokens), in one
currency, with the date (`as_of`) and the `source` of the figures. A figure that could not be
confirmed from the vendor's public price list says so in its source ("unconfirmed: ...").
docs/pricing.md is the table for users; GENTASK_PRICES (chart `pricing.overrides`) overrides
any field of any entry (`parse_overrides`).

Money is `Decimal`, never float: prices are written as decimal strings, exactly as the vendor
lists them, and a cost is rounded once, per attempt, to a millionth of the currency unit
(micro-units, half up). The status shows amounts as decimal strings ("0.259"); the MongoDB
mirror adds integer micro-units beside them, which sum exactly there.

What is charged (docs/pricing.md, "Charging rules"): an attempt the vendor answered with a result
costs what its usage says by the price; an attempt the vendor refused (4xx, auth, validation,
rate limit, 5xx, a timeout: nothing produced) costs nothing; a vendor job (video) that ran and
then failed costs what the vendor reports as its usage, and nothing when it reports none. A
result that was produced (and billed) but could not be kept (its download failed) still costs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from gentask.domain.catalog import CATALOG
from gentask.domain.task import TaskType

MICRO = Decimal("0.000001")
MICROS_PER_UNIT = 1_000_000
THOUSAND = Decimal(1000)
CURRENCY_PATTERN = r"^[A-Z]{3}$"
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"

# Usage units, as the status records them (camelCase there): what prices apply to.
USAGE_UNITS = ("images", "input_tokens", "output_tokens", "video_seconds", "video_tokens")


@dataclass(frozen=True)
class Price:
    """What one model costs. Only the units with a figure are charged."""

    currency: str
    as_of: str                                  # ISO date the figures were read
    source: str                                 # URL or document; "unconfirmed: ..." when not confirmed
    per_image: Decimal | None = None
    per_image_by_size: Mapping[str, Decimal] = field(default_factory=dict)   # size -> price, else per_image
    per_1k_input_tokens: Decimal | None = None
    per_1k_output_tokens: Decimal | None = None
    per_second: Decimal | None = None           # per second of video produced
    per_1k_video_tokens: Decimal | None = None  # per 1k video tokens the vendor reports

    def cost(self, usage: Mapping[str, int], size: str | None = None) -> Decimal:
        """The cost of `usage` (USAGE_UNITS) at this price, rounded to micro-units, half up."""
        total = Decimal(0)
        images = usage.get("images") or 0
        per_image = self.per_image_by_size.get(size or "", self.per_image)
        if per_image is not None:
            total += per_image * images
        for unit, price in (("input_tokens", self.per_1k_input_tokens), ("output_tokens", self.per_1k_output_tokens),
                            ("video_tokens", self.per_1k_video_tokens)):
            if price is not None:
                total += price * (usage.get(unit) or 0) / THOUSAND
        if self.per_second is not None:
            total += self.per_second * (usage.get("video_seconds") or 0)
        return total.quantize(MICRO, rounding=ROUND_HALF_UP)

    def describe(self) -> str:
        """The figures in one line, e.g. "0.2 CNY/image"."""
        parts = []
        if self.per_image is not None:
            parts.append(f"{self.per_image} {self.currency}/image")
        parts += [f"{v} {self.currency}/image at {k}" for k, v in self.per_image_by_size.items()]
        for what, value in (("1k input tokens", self.per_1k_input_tokens),
                            ("1k output tokens", self.per_1k_output_tokens), ("second", self.per_second),
                            ("1k video tokens", self.per_1k_video_tokens)):
            if value is not None:
                parts.append(f"{value} {self.currency}/{what}")
        return ", ".join(parts) or f"free ({self.currency})"


def _d(value: str) -> Decimal:
    return Decimal(value)


ARK_PRICES = "https://www.volcengine.com/docs/82379/1544106"         # Ark 模型价格 (CNY)
OPENAI_PRICES = "https://platform.openai.com/docs/pricing"
AS_OF = "2026-12-01"
_SEEN_VIA = "; figures as also listed in lobehub/lobehub packages/model-bank/src/aiModels/volcengine.ts"
TEST_SOURCE = "test price of the built-in simulator, in XTS (ISO 4217's code for testing): no money is spent"

PRICES: dict[tuple[str, str], Price] = {
    # Volcengine Ark (CNY, mainland list prices)
    ("volcengine", "doubao-seedream-3-0-t2i-250415"): Price("CNY", AS_OF, ARK_PRICES + _SEEN_VIA,
                                                            per_image=_d("0.259")),
    ("volcengine", "doubao-seedream-4-0-250828"): Price("CNY", AS_OF, ARK_PRICES + _SEEN_VIA, per_image=_d("0.2")),
    ("volcengine", "doubao-seedream-4-5-251128"): Price("CNY", AS_OF, ARK_PRICES + _SEEN_VIA, per_image=_d("0.25")),
    ("volcengine", "doubao-pro-4k"): Price(
        "CNY", AS_OF, ARK_PRICES + "; unconfirmed: the Doubao-pro family's 0.8/2 CNY per million tokens "
        "(doubao-pro-32k's list price); the 4k model is no longer listed",
        per_1k_input_tokens=_d("0.0008"), per_1k_output_tokens=_d("0.002")),
    ("volcengine", "doubao-seed-1-6-250615"): Price(
        "CNY", AS_OF, ARK_PRICES + _SEEN_VIA + "; tier of inputs up to 32k tokens and outputs over 200 tokens "
        "(0.8/8 CNY per million); outputs of at most 200 tokens list at 2 CNY per million, not modelled",
        per_1k_input_tokens=_d("0.0008"), per_1k_output_tokens=_d("0.008")),
    ("volcengine", "doubao-seedance-1-0-pro-250528"): Price(
        "CNY", AS_OF, ARK_PRICES + _SEEN_VIA + "; 15 CNY per million video tokens, billed by "
        "usage.completion_tokens (about width x height x 24 fps x seconds / 1024)",
        per_1k_video_tokens=_d("0.015")),
    # Volcengine Visual (Jimeng)
    ("volcengine", "jimeng_high_aes_general_v21_L"): Price(
        "CNY", AS_OF, "unconfirmed: no public list price found for Jimeng 2.1 text-to-image "
        "(https://www.volcengine.com/docs/85128); 0.2 CNY/image assumed, set GENTASK_PRICES",
        per_image=_d("0.2")),
    ("volcengine", "jimeng_vgfm_t2v_l20"): Price(
        "CNY", AS_OF, "unconfirmed: no public list price found for Jimeng S2.0 Pro video "
        "(https://www.volcengine.com/docs/85128); 0.5 CNY per second assumed, set GENTASK_PRICES",
        per_second=_d("0.5")),
    ("volcengine", "jimeng_t2v_v30"): Price(
        "CNY", AS_OF, "unconfirmed: no public list price found for Jimeng 3.0 video "
        "(https://www.volcengine.com/docs/85621); 0.5 CNY per second assumed, set GENTASK_PRICES",
        per_second=_d("0.5")),
    # OpenAI (USD)
    ("openai", "dall-e-3"): Price("USD", AS_OF, OPENAI_PRICES + " (standard quality)", per_image=_d("0.04"),
                                  per_image_by_size={"1792x1024": _d("0.08"), "1024x1792": _d("0.08")}),
    ("openai", "dall-e-2"): Price("USD", AS_OF, OPENAI_PRICES, per_image=_d("0.02"),
                                  per_image_by_size={"256x256": _d("0.016"), "512x512": _d("0.018")}),
    ("openai", "gpt-image-1"): Price("USD", AS_OF, OPENAI_PRICES + " (text input 5, image output 40 USD per "
                                     "million tokens)", per_1k_input_tokens=_d("0.005"),
                                     per_1k_output_tokens=_d("0.04")),
    ("openai", "gpt-image-1-mini"): Price("USD", AS_OF, OPENAI_PRICES + " (text input 2, image output 8 USD per "
                                          "million tokens)", per_1k_input_tokens=_d("0.002"),
                                          per_1k_output_tokens=_d("0.008")),
    ("openai", "gpt-image-1.5"): Price("USD", AS_OF, "unconfirmed: " + OPENAI_PRICES + " as recalled (text input "
                                       "5, image output 32 USD per million tokens)",
                                       per_1k_input_tokens=_d("0.005"), per_1k_output_tokens=_d("0.032")),
    ("openai", "gpt-image-2"): Price("USD", AS_OF, "unconfirmed: no list price found; gpt-image-1.5's figures "
                                     "assumed, set GENTASK_PRICES", per_1k_input_tokens=_d("0.005"),
                                     per_1k_output_tokens=_d("0.032")),
    ("openai", "gpt-4"): Price("USD", AS_OF, OPENAI_PRICES + " (legacy models)", per_1k_input_tokens=_d("0.03"),
                               per_1k_output_tokens=_d("0.06")),
    ("openai", "gpt-4.1"): Price("USD", AS_OF, OPENAI_PRICES, per_1k_input_tokens=_d("0.002"),
                                 per_1k_output_tokens=_d("0.008")),
    ("openai", "gpt-5"): Price("USD", AS_OF, OPENAI_PRICES, per_1k_input_tokens=_d("0.00125"),
                               per_1k_output_tokens=_d("0.01")),
    ("openai", "sora-2"): Price("USD", AS_OF, OPENAI_PRICES + " (720p)", per_second=_d("0.1")),
    ("openai", "sora-2-pro"): Price("USD", AS_OF, OPENAI_PRICES + " (720p; 1024p lists at 0.5 USD per second)",
                                    per_second=_d("0.3")),
    # the built-in simulator: test prices in XTS, so that tests see real arithmetic
    ("fake", "fake-image"): Price("XTS", AS_OF, TEST_SOURCE, per_image=_d("0.01")),
    ("fake", "fake-video"): Price("XTS", AS_OF, TEST_SOURCE, per_second=_d("0.05")),
    ("fake", "fake-text"): Price("XTS", AS_OF, TEST_SOURCE, per_1k_input_tokens=_d("0.001"),
                                 per_1k_output_tokens=_d("0.002")),
}

DECIMAL_FIELDS = ("per_image", "per_1k_input_tokens", "per_1k_output_tokens", "per_second", "per_1k_video_tokens")
# GENTASK_PRICES field names (camelCase, as the chart writes them) -> Price fields
OVERRIDE_FIELDS = {"currency": "currency", "asOf": "as_of", "source": "source", "perImage": "per_image",
                   "perImageBySize": "per_image_by_size", "per1kInputTokens": "per_1k_input_tokens",
                   "per1kOutputTokens": "per_1k_output_tokens", "perSecond": "per_second",
                   "per1kVideoTokens": "per_1k_video_tokens"}


class PriceError(ValueError):
    """GENTASK_PRICES names an unknown model or field, or a value that is not a price."""


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, (bool, float)):     # JSON numbers arrive as Decimal (parse_float); float: a caller's
        raise PriceError(f"{where}: {value!r} is not accepted; expected a decimal string such as \"0.2\"")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PriceError(f"{where}: {value!r} is not accepted; expected a decimal string such as \"0.2\"") from None
    if not number.is_finite() or number < 0:
        raise PriceError(f"{where}: {value!r} is not accepted; expected a price of 0 or more")
    return number


def _override(base: Price, key: str, given: Any) -> Price:
    if not isinstance(given, Mapping):
        raise PriceError(f"GENTASK_PRICES[{key!r}]: expected an object of fields "
                         f"({', '.join(OVERRIDE_FIELDS)}), got {type(given).__name__}")
    changes: dict[str, Any] = {}
    for name, value in given.items():
        attr = OVERRIDE_FIELDS.get(name)
        where = f"GENTASK_PRICES[{key!r}].{name}"
        if attr is None:
            raise PriceError(f"{where} is not a price field; accepted fields: {', '.join(OVERRIDE_FIELDS)}")
        if attr in DECIMAL_FIELDS:
            changes[attr] = _decimal(value, where)
        elif attr == "per_image_by_size":
            if not isinstance(value, Mapping):
                raise PriceError(f"{where}: expected an object of size -> price, e.g. {{\"1024x1024\": \"0.04\"}}")
            changes[attr] = {str(k): _decimal(v, f"{where}.{k}") for k, v in value.items()}
        elif attr == "currency":
            if not (isinstance(value, str) and len(value) == 3 and value.isascii() and value.isupper()):
                raise PriceError(f"{where}: {value!r} is not accepted; expected an ISO 4217 code such as CNY, USD")
            changes[attr] = value
        else:
            if not isinstance(value, str) or not value:
                raise PriceError(f"{where}: expected a non-empty string")
            changes[attr] = value
    if "source" not in changes:
        changes["source"] = "GENTASK_PRICES (overridden); catalog: " + base.source
    return replace(base, **changes)


def parse_overrides(text: str) -> dict[tuple[str, str], Price]:
    """GENTASK_PRICES as JSON: {"provider/model": {field: value, ...}} -> the entries it changes.

    Fields are those of OVERRIDE_FIELDS; the ones not given keep the catalog's values. Raises
    PriceError naming the model and the field that is wrong and what is accepted."""
    try:
        data = json.loads(text, parse_float=Decimal)     # "0.1" and 0.1 are both exact
    except json.JSONDecodeError as exc:
        raise PriceError(f"GENTASK_PRICES is not valid JSON ({exc.msg} at position {exc.pos}); expected "
                         "{\"provider/model\": {\"perImage\": \"0.2\", ...}}") from None
    if not isinstance(data, Mapping):
        raise PriceError("GENTASK_PRICES: expected a JSON object {\"provider/model\": {...}}")
    out: dict[tuple[str, str], Price] = {}
    for key, given in data.items():
        provider, _, model = str(key).partition("/")
        base = PRICES.get((provider, model))
        if base is None:
            raise PriceError(f"GENTASK_PRICES[{key!r}]: not a model of the catalog; name it provider/model, "
                             f"e.g. volcengine/doubao-seedream-4-0-250828 (see docs/pricing.md)")
        out[(provider, model)] = _override(base, str(key), given)
    return out


class PriceTable:
    """The catalog's prices with the overrides of GENTASK_PRICES on top."""

    def __init__(self, overrides: Mapping[tuple[str, str], Price] | None = None) -> None:
        self.prices = {**PRICES, **(overrides or {})}

    @classmethod
    def from_text(cls, text: str | None) -> PriceTable:
        """The table from GENTASK_PRICES' JSON (None or blank: the catalog's prices)."""
        return cls(parse_overrides(text) if text and text.strip() else None)

    def get(self, provider: str, model: str) -> Price | None:
        """The price of (provider, model), None for a model outside the catalog."""
        return self.prices.get((provider, model))


def normalize_usage(type_: TaskType, vendor: Mapping[str, int], *, images: int = 0,
                    video_seconds: int | None = None, words: tuple[int, int] | None = None) -> dict[str, int]:
    """What an attempt consumed, in USAGE_UNITS: the vendor's numbers where it reports them
    (Ark `generated_images`, `prompt_tokens`/`completion_tokens`, Seedance `completion_tokens`;
    OpenAI `input_tokens`/`output_tokens`), else what was produced (images, seconds of video,
    and for text the words of the prompt and the answer)."""
    out: dict[str, int] = {}
    inp = vendor.get("prompt_tokens", vendor.get("input_tokens"))
    outp = vendor.get("completion_tokens", vendor.get("output_tokens"))
    if type_ is TaskType.IMAGE:
        out["images"] = vendor.get("generated_images", images)
        if inp is not None:
            out["input_tokens"] = inp
        if outp is not None:
            out["output_tokens"] = outp
    elif type_ is TaskType.TEXT:
        if inp is None and outp is None and words is not None:
            inp, outp = words
        out["input_tokens"], out["output_tokens"] = inp or 0, outp or 0
    else:
        seconds = vendor.get("duration_seconds", video_seconds)
        if seconds is not None:
            out["video_seconds"] = seconds
        tokens = vendor.get("completion_tokens", vendor.get("total_tokens"))
        if tokens is not None:
            out["video_tokens"] = tokens
    return out


def add_usage(usages: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The sum of several usages, unit by unit (units none of them has are left out)."""
    total: dict[str, int] = {}
    for usage in usages:
        for unit, value in usage.items():
            total[unit] = total.get(unit, 0) + int(value)
    return total


def micros(amount: Decimal | str) -> int:
    """An amount in micro-units of its currency (what the mirror sums)."""
    return int((Decimal(amount) * MICROS_PER_UNIT).to_integral_value(rounding=ROUND_HALF_UP))


def amount_text(amount: Decimal) -> str:
    """An amount as the status shows it: a plain decimal string, no exponent, no trailing zeros."""
    text = format(amount.quantize(MICRO, rounding=ROUND_HALF_UP), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def price_fields() -> list[str]:
    """The Price fields, for documentation and checks."""
    return [f.name for f in fields(Price)]


def missing_prices() -> list[str]:
    """Catalog models without a price (a unit test keeps this empty)."""
    return [f"{p}/{m}" for (p, m) in CATALOG if (p, m) not in PRICES]


__all__ = [
    "AMOUNT_PATTERN", "CURRENCY_PATTERN", "PRICES", "USAGE_UNITS", "Price", "PriceError", "PriceTable",
    "Attempt", "add_usage", "amount_text", "attempt_cost", "micros", "missing_prices", "normalize_usage",
    "GROUPS", "parse_overrides", "task_cost", "usage_summary",
]


# --- a task's cost ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One vendor attempt as the runner saw it: who, how it ended, what it consumed."""

    provider: str
    model: str
    succeeded: bool
    usage: Mapping[str, int]
    reason: str | None = None
    vendor_task_id: str | None = None
    size: str | None = None             # the image size asked for (per-size image prices)


def attempt_cost(attempt: Attempt, table: PriceTable) -> tuple[Decimal, str]:
    """(amount, currency) of one attempt by the table: its usage at the model's price.

    The runner records usage only where the vendor produced something or reported what it
    billed, so a refused attempt has no usage and costs 0."""
    price = table.get(attempt.provider, attempt.model)
    if price is None:
        return Decimal(0), "XXX"          # ISO 4217's "no currency": a model outside the catalog
    return price.cost(attempt.usage, attempt.size), price.currency


def task_cost(attempts: Iterable[Attempt], table: PriceTable, *, primary: tuple[str, str]) -> dict[str, Any]:
    """A task's status.usage and status.cost (camelCase, as the status takes them) from its attempts.

    `primary`: the task's (provider, model), whose currency a task that cost nothing is shown in."""
    entries: list[dict[str, Any]] = []
    totals: dict[str, Decimal] = {}
    usages = []
    for a in attempts:
        amount, currency = attempt_cost(a, table)
        usage = {k: int(v) for k, v in a.usage.items() if k in USAGE_UNITS}
        usages.append(usage)
        entry: dict[str, Any] = {"provider": a.provider, "model": a.model,
                                 "outcome": "Succeeded" if a.succeeded else "Failed",
                                 "usage": {_camel(k): v for k, v in usage.items()},
                                 "amount": amount_text(amount), "currency": currency}
        if a.reason:
            entry["reason"] = a.reason
        if a.vendor_task_id:
            entry["vendorTaskID"] = a.vendor_task_id
        entries.append(entry)
        if amount > 0:
            totals[currency] = totals.get(currency, Decimal(0)) + amount
    if not totals:
        price = table.get(*primary)
        totals = {price.currency if price else "XXX": Decimal(0)}
    cost: dict[str, Any] = {"totals": [{"amount": amount_text(v), "currency": c} for c, v in sorted(totals.items())],
                            "attempts": entries[-32:]}
    if len(totals) == 1:
        ((currency, amount),) = totals.items()
        cost.update(amount=amount_text(amount), currency=currency)
    return {"usage": {_camel(k): v for k, v in add_usage(usages).items()}, "cost": cost}


def _camel(unit: str) -> str:
    head, *rest = unit.split("_")
    return head + "".join(p.capitalize() for p in rest)


# --- totals over many tasks (the usage endpoint) ---------------------------------------------------

GROUPS = ("model", "provider", "day", "user")


def _snake_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in (usage or {}).items():
        unit = "".join("_" + c.lower() if c.isupper() else c for c in key)
        if unit in USAGE_UNITS and isinstance(value, int) and not isinstance(value, bool):
            out[unit] = value
    return out


def usage_summary(records: Iterable[Mapping[str, Any]], group_by: str) -> dict[str, Any]:
    """Totals of mirror records (usage_records) per group: tasks, usage units and cost per currency.

    model/provider: each attempt counts for the provider and model that made it (a fallback task's
    failed primary and its serving fallback land in two groups); day (UTC, of completionTime) and
    user count each task once. Amounts are summed as Decimal, so totals equal the sum of the
    status amounts exactly."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by {group_by!r} is not accepted; accepted: {', '.join(GROUPS)}")
    groups: dict[str, dict[str, Any]] = {}
    totals: dict[str, Decimal] = {}
    count = 0

    def group(key: str, labels: dict[str, str]) -> dict[str, Any]:
        if key not in groups:
            groups[key] = {"key": key, **labels, "tasks": set(), "usage": {}, "cost": {}}
        return groups[key]

    for n, rec in enumerate(records):
        count += 1
        found = rec.get("cost")
        cost: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        attempts = [a for a in cost.get("attempts") or [] if isinstance(a, Mapping)]
        if group_by in ("day", "user"):
            when = rec.get("completionTime")
            key = when.strftime("%Y-%m-%d") if group_by == "day" and when is not None else str(rec.get("userID") or "")
            money = [(t.get("amount"), t.get("currency")) for t in cost.get("totals") or [] if isinstance(t, Mapping)]
            parts = [(key, {group_by: key}, _snake_usage(rec.get("usage")), money)]
        else:
            parts = []
            for a in attempts or [{"provider": rec.get("provider"), "model": rec.get("model")}]:
                provider, model = str(a.get("provider") or ""), str(a.get("model") or "")
                key = provider if group_by == "provider" else f"{provider}/{model}"
                labels = {"provider": provider} if group_by == "provider" else {"provider": provider, "model": model}
                parts.append((key, labels, _snake_usage(a.get("usage")), [(a.get("amount"), a.get("currency"))]))
        for key, labels, usage, money in parts:
            g = group(key, labels)
            g["tasks"].add(n)
            g["usage"] = add_usage([g["usage"], usage])
            for amount, currency in money:
                if not amount or not currency:
                    continue
                value = Decimal(str(amount))
                g["cost"][currency] = g["cost"].get(currency, Decimal(0)) + value
                totals[currency] = totals.get(currency, Decimal(0)) + value
    out = []
    for g in sorted(groups.values(), key=lambda g: g["key"]):
        out.append({**g, "tasks": len(g["tasks"]),
                    "cost": [{"amount": amount_text(v), "currency": c} for c, v in sorted(g["cost"].items())]})
    return {"groups": out, "tasks": count,
            "totals": [{"amount": amount_text(v), "currency": c} for c, v in sorted(totals.items())]}
