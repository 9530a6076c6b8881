"""Request cost in USD: the user's price file first, then genai-prices' bundled data.

genai-prices is used strictly offline. We read its bundled `genai_prices.data.providers`
list and call `ModelInfo.calc_price` on it directly, never `genai_prices.calc_price`: that
one consults the process-wide snapshot, which `UpdatePrices` (a thread fetching JSON from
GitHub) may have replaced. Nothing here starts `UpdatePrices`, so no thread and no HTTP.

Cost of `PriceTable.price` (measured on the dev box): a price-file model ~3 µs; a bundled
model with a flat price (1,978 of 2,330) ~3.5 µs, through rates read once off genai-prices'
own calculation (`linear_rates`; a test proves them equal for every flat model); a tiered or
time-windowed price ~300 µs, in genai-prices' unit-registry arithmetic; an unknown model
~2 µs once cached (genai-prices needs 0.7-3 ms to scan its models for a miss).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from genai_prices.data import providers as BUNDLED_PROVIDERS
from genai_prices.types import ModelInfo, ModelPrice, Provider, StartDateConstraint, TieredPrices
from genai_prices.types import Usage as GenaiUsage

from llmobs.records import Usage
from llmobs.telemetry import providers
from llmobs.yamlfile import amount, read_section

log = logging.getLogger(__name__)

_PER_MILLION = Decimal(1_000_000)
_LOOKUP_CACHE_SIZE = 4096  # distinct model names remembered; clients choose them, so bounded
_RATE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")

Match = tuple[Provider, ModelInfo]
Context = tuple[tuple[str, str], ...]  # (key, value) pairs of a genai-prices price context, sorted

# What a response may say about how it was served that genai-prices prices by (its `price_context`
# keys): OpenAI's `service_tier` (priority, flex), Anthropic's `usage.speed` (fast).
PRICE_CONTEXT_KEYS = ("service_tier", "speed")


class PriceFileError(ValueError):
    """The price file is unreadable or invalid; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class ModelRates:
    """Prices of one price-file model, USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    reasoning: Decimal

    def cost(self, usage: Usage) -> Decimal:
        """USD for a complete, consistent usage (see `_priceable`)."""
        assert usage.input_tokens is not None and usage.output_tokens is not None
        cache_read = usage.cache_read_tokens or 0
        cache_write = usage.cache_write_tokens or 0
        reasoning = usage.reasoning_tokens or 0
        micro_usd = (
            (usage.input_tokens - cache_read - cache_write) * self.input
            + cache_read * self.cache_read
            + cache_write * self.cache_write
            + (usage.output_tokens - reasoning) * self.output
            + reasoning * self.reasoning
        )
        return micro_usd / _PER_MILLION


_DEFAULT = "\x00default"  # price() without a provider: the one the table was loaded for


class PriceTable:
    """Prices requests: price-file models by exact name, then genai-prices' bundled data."""

    def __init__(
        self,
        overrides: Mapping[str, ModelRates],
        provider: str | None = None,
        *,
        find: Callable[[str], Match | None] | None = None,
    ) -> None:
        """`find` replaces the bundled lookup for `provider` (tests)."""
        self._overrides = dict(overrides)
        self._provider = provider
        self._finders: dict[str | None, Callable[[str], Match | None] | None] = {}
        if find is not None:
            self._finders[provider] = lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(find)
        # Bounded by the lookup caches and each model's few price variants.
        self._linear: dict[tuple[str, str, Context], LinearRates | None] = {}
        self._variant_keys: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}

    @classmethod
    def load(cls, *, provider: str | None, price_file: str | Path | None) -> PriceTable:
        """Build the table at start-up; a bad price file raises PriceFileError.

        `provider` (a genai-prices id or a semconv name, see `providers.lookup`) is the one a
        price() call without its own is priced for; None means the upstream is unknown, and a
        model is then priced by the provider its name belongs to (`gpt-*` by OpenAI, `claude*`
        by Anthropic, ...), as genai-prices does without a provider. A provider genai-prices
        lacks (e.g. "vllm") gets the price file's prices only.
        """
        overrides = read_price_file(Path(price_file)) if price_file is not None else {}
        return cls(overrides, provider)

    def price(
        self,
        model: str | None,
        usage: Usage,
        *,
        provider: str | None = _DEFAULT,
        at: datetime | None = None,
        context: Mapping[str, str] | None = None,
    ) -> Decimal | None:
        """USD for one request, or None when it cannot be priced: never 0 for an unknown model.

        `at` is the request's wall-clock time (default now): some prices depend on the date or
        the time of day (DeepSeek's off-peak hours). `context` is what the response said about
        how it was served (`price_context`): genai-prices prices some models by it (OpenAI's
        priority and flex tiers, Anthropic's fast mode). A price file's rates ignore it.
        """
        usage = _billable(usage)
        if not model or not _priceable(usage):
            return None
        rates = self._overrides.get(model)
        if rates is not None:
            return rates.cost(usage) if _has_tokens(usage) else None
        find = self._finder(self._provider if provider == _DEFAULT else provider)
        found = None if find is None else find(model)
        if found is None:
            return None
        bundled, info = found
        variant = self._variant_context(bundled, info, context) if context and info.price_variants else ()
        if not usage.pricing:
            key = (bundled.id, info.id, variant)
            if key not in self._linear:
                self._linear[key] = linear_rates(bundled, info, variant)
            linear = self._linear[key]
            if linear is not None:
                return linear.cost(usage)
        calc = info.calc_price(
            _genai_usage(usage),
            bundled,
            genai_request_timestamp=at or datetime.now(UTC),
            price_context=dict(variant) or None,
        )
        return calc.total_price

    def _variant_context(self, provider: Provider, info: ModelInfo, context: Mapping[str, str]) -> Context:
        """The pairs of `context` that some price variant of this model is conditioned on.

        Values come from the upstream's response: keeping only those a variant names bounds
        what is cached per model.
        """
        key = (provider.id, info.id)
        wanted = self._variant_keys.get(key)
        if wanted is None:
            # A model priced through a provider that resells it (Azure: OpenAI's) has no variants
            # there: genai-prices ignores the context for it, and so does this.
            own = any(model is info for model in provider.models)
            variants = info.price_variants or () if own else ()
            wanted = self._variant_keys[key] = frozenset(pair for v in variants for pair in v.when.items())
        return tuple(sorted(pair for pair in context.items() if pair in wanted))

    def _finder(self, provider: str | None) -> Callable[[str], Match | None] | None:
        if provider not in self._finders:
            find = _bundled_finder(provider)
            # genai-prices does not remember misses, and a miss scans every model: cache both.
            self._finders[provider] = None if find is None else lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(find)
        return self._finders[provider]


@dataclass(frozen=True, slots=True)
class LinearRates:
    """A flat genai-prices price, read off its own calculation: a fee per request plus
    ModelRates (USD per million tokens). For a price with no tiers and no time windows,
    genai-prices' cost is linear in the token counts, so this gives its exact result at
    ModelRates' cost (microseconds) instead of its unit-registry arithmetic (~0.3 ms)."""

    per_request: Decimal
    rates: ModelRates

    def cost(self, usage: Usage) -> Decimal:
        return self.per_request + self.rates.cost(usage)


def linear_rates(provider: Provider, info: ModelInfo, context: Context = ()) -> LinearRates | None:
    """Probe genai-prices with one million tokens of each kind; None unless the price is flat.

    With a `context` (see `PriceTable._variant_context`), the rates of the variant it selects.
    """
    prices = info.prices
    if not isinstance(prices, ModelPrice):
        return None
    price_context = dict(context) or None
    if price_context is not None:
        now = datetime.now(UTC)
        for variant in info.price_variants or ():
            constraint = variant.constraint
            if (
                all(price_context.get(key) == value for key, value in variant.when.items())
                and constraint is not None
                and not (isinstance(constraint, StartDateConstraint) and constraint.active(now))
            ):
                return None  # a price that starts later or holds at some hours: priced each time
        prices = info.get_prices(now, price_context)
    if any(isinstance(v, TieredPrices) for v in vars(prices).values()):
        return None

    def calc(**counts: int) -> Decimal:
        return info.calc_price(GenaiUsage(**counts), provider, price_context=price_context).total_price

    million = 1_000_000
    fee = calc(input_tokens=0, output_tokens=0)
    rates = ModelRates(
        input=calc(input_tokens=million, output_tokens=0) - fee,
        cache_read=calc(input_tokens=million, cache_read_tokens=million, output_tokens=0) - fee,
        cache_write=calc(input_tokens=million, cache_write_tokens=million, output_tokens=0) - fee,
        output=calc(input_tokens=0, output_tokens=million) - fee,
        reasoning=calc(input_tokens=0, output_tokens=million, output_reasoning_tokens=million) - fee,
    )
    return LinearRates(fee, rates)


def _billable(usage: Usage) -> Usage:
    """Usage whose only billable count is input (embeddings: no output, not zero output) priced as
    input and zero output, on the fast path like any other."""
    if usage.pricing and usage.output_tokens is None and {key for key, _ in usage.pricing} == {"input_tokens"}:
        return dataclasses.replace(usage, output_tokens=0, pricing=())
    return usage


def _has_tokens(usage: Usage) -> bool:
    return usage.input_tokens is not None and usage.output_tokens is not None


def _priceable(usage: Usage) -> bool:
    """Usage in genai-prices' keys; or input and output reported, the subsets within their totals."""
    if usage.pricing:
        return True
    if usage.input_tokens is None or usage.output_tokens is None:
        return False
    cached = (usage.cache_read_tokens or 0) + (usage.cache_write_tokens or 0)
    if cached > usage.input_tokens or (usage.reasoning_tokens or 0) > usage.output_tokens:
        log.debug("inconsistent usage, not priced: %r", usage)
        return False
    return True


def _genai_usage(usage: Usage) -> GenaiUsage:
    """Our usage in genai-prices' terms; it leaves out None (unreported) values itself.

    genai-prices bills a subset the model has a rate for (cache read/write, reasoning) at that
    rate and takes it out of its total; a subset without a rate stays in the total and pays its
    rate. That is the price-file formula, so cached input is never billed twice.
    """
    if usage.pricing:
        return GenaiUsage(**dict(usage.pricing))
    return GenaiUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
    )


# ---- genai-prices lookup ---------------------------------------------------------------


def _bundled_finder(provider: str | None) -> Callable[[str], Match | None] | None:
    """How to find a model in the bundled data for this provider; None when there is none."""
    if not provider:
        return _find_by_family
    pricing_id = providers.lookup(provider).pricing
    bundled = next((p for p in BUNDLED_PROVIDERS if p.id == pricing_id), None)
    if bundled is None:
        log.info("genai-prices has no provider %r: only the price file prices requests", pricing_id)
        return None
    return lambda model: _find_in(bundled, model)


def _find_in(provider: Provider, model: str) -> Match | None:
    """The model in this provider, or in those it resells (Azure: OpenAI's; Google: Anthropic's)."""
    info = provider.find_model(model, all_providers=BUNDLED_PROVIDERS)
    return None if info is None else (provider, info)


def _find_by_family(model: str) -> Match | None:
    """genai-prices' rule without a provider: the first provider whose name pattern matches."""
    ref = model.lower()
    for provider in BUNDLED_PROVIDERS:
        if provider.model_match is not None and provider.model_match.is_match(ref):
            return _find_in(provider, ref)
    return None


# ---- the price file --------------------------------------------------------------------


def read_price_file(path: Path) -> dict[str, ModelRates]:
    """Parse and validate a price file: `models: {name: {input, output, cache_read?, ...}}`."""
    models = read_section(path, "models", what="price file", maps="model names to prices", error=PriceFileError)
    return {_model_name(path, name): _model_rates(path, str(name), entry) for name, entry in models.items()}


def _model_name(path: Path, name: object) -> str:
    if not isinstance(name, str) or not name:  # `Number` is a str: `3.5:` keeps its text
        raise PriceFileError(f"price file {path}: model name {name!r} must be a non-empty string")
    return str(name)


def _model_rates(path: Path, model: str, entry: object) -> ModelRates:
    where = f"price file {path}: model {model!r}"
    if not isinstance(entry, dict):
        raise PriceFileError(f"{where}: expected a mapping of prices, got {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in _RATE_KEYS)
    if unknown:
        allowed = ", ".join(_RATE_KEYS)
        raise PriceFileError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {allowed})")
    missing = [key for key in ("input", "output") if key not in entry]
    if missing:
        raise PriceFileError(f"{where}: missing required price(s) {', '.join(missing)}")
    rates = {
        key: amount(where, key, value, unit="USD per million tokens", error=PriceFileError)
        for key, value in entry.items()
    }
    return ModelRates(
        input=rates["input"],
        output=rates["output"],
        cache_read=rates.get("cache_read", rates["input"]),
        cache_write=rates.get("cache_write", rates["input"]),
        reasoning=rates.get("reasoning", rates["output"]),
    )
