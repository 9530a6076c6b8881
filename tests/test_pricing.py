"""Pricing: hand-computed costs from genai-prices' bundled rates, the price file, offline use.

Also covers `llmobs.providers` (the upstream-host table), which pricing is keyed by.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import data_snapshot
from genai_prices.data import providers as bundled_providers
from genai_prices.types import ModelPrice

from llmobs.records import Usage
from llmobs.telemetry import providers
from llmobs.telemetry.pricing import ModelRates, PriceFileError, PriceTable, read_price_file

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # prices can depend on the date: pin it


def bundled_prices(provider_id: str, model_id: str) -> ModelPrice:
    """The rates the hand computations below rely on, straight from the bundled data."""
    provider = next(p for p in bundled_providers if p.id == provider_id)
    model = next(m for m in provider.models if m.id == model_id)
    return model.get_prices(AT)


def table(provider: str | None = "openai", price_file: Path | None = None) -> PriceTable:
    return PriceTable.load(provider=provider, price_file=price_file)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---- bundled prices, computed by hand ------------------------------------------------


def test_gpt_4o_cached_input_is_billed_at_the_cache_rate_only() -> None:
    rates = bundled_prices("openai", "gpt-4o")
    assert (rates.input_mtok, rates.output_mtok, rates.cache_read_mtok) == (
        Decimal("2.5"),
        Decimal("10"),
        Decimal("1.25"),
    )
    usage = Usage(input_tokens=12_345, output_tokens=6_789, cache_read_tokens=2_345, reasoning_tokens=1_000)
    # 10,000 fresh input × 2.5 + 2,345 cached × 1.25 + 6,789 output × 10 (reasoning has no own rate)
    expected = (Decimal(25_000) + Decimal("2931.25") + Decimal(67_890)) / 1_000_000
    assert expected == Decimal("0.09582125")
    assert table("openai").price("gpt-4o", usage, at=AT) == expected


def test_claude_cache_writes_and_reads_have_their_own_rates() -> None:
    rates = bundled_prices("anthropic", "claude-haiku-4-5")
    assert (rates.input_mtok, rates.output_mtok, rates.cache_read_mtok, rates.cache_write_mtok) == (
        Decimal("1"),
        Decimal("5"),
        Decimal("0.1"),
        Decimal("1.25"),
    )
    usage = Usage(
        input_tokens=10_000,
        output_tokens=1_000,
        cache_read_tokens=3_000,
        cache_write_tokens=2_000,
        reasoning_tokens=400,
    )
    # 5,000 fresh × 1 + 3,000 read × 0.1 + 2,000 written × 1.25 + 1,000 output × 5
    assert table("anthropic").price("claude-haiku-4-5", usage, at=AT) == Decimal("0.0128")


def test_reasoning_tokens_use_the_reasoning_rate_where_the_provider_has_one() -> None:
    rates = bundled_prices("perplexity", "sonar-deep-research")
    assert (rates.input_mtok, rates.output_mtok, rates.output_reasoning_mtok) == (
        Decimal("2"),
        Decimal("8"),
        Decimal("3"),
    )
    usage = Usage(input_tokens=1_000, output_tokens=2_000, reasoning_tokens=1_500)
    # 1,000 × 2 + 500 answer × 8 + 1,500 reasoning × 3
    assert table("perplexity").price("sonar-deep-research", usage, at=AT) == Decimal("0.0105")


def test_deepseek_off_peak_hours_follow_the_request_time() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=400_000)
    prices = table("deepseek")
    peak = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    off_peak = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
    # peak: 600k × 0.27 + 400k × 0.07 + 100k × 1.1; off-peak: half of each rate
    assert prices.price("deepseek-chat", usage, at=peak) == Decimal("0.30")
    assert prices.price("deepseek-chat", usage, at=off_peak) == Decimal("0.15")


def test_azure_falls_back_to_the_openai_models_it_resells() -> None:
    usage = Usage(input_tokens=12_345, output_tokens=6_789, cache_read_tokens=2_345)
    expected = table("openai").price("gpt-4o", usage, at=AT)
    assert table("azure").price("gpt-4o", usage, at=AT) == expected
    assert table("azure.ai.openai").price("gpt-4o", usage, at=AT) == expected  # semconv name works too


def test_dated_and_uppercase_model_names_match_the_bundled_model() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    prices = table("openai")
    assert prices.price("gpt-4o-2024-08-06", usage, at=AT) == prices.price("gpt-4o", usage, at=AT)
    assert prices.price("GPT-4o", usage, at=AT) == prices.price("gpt-4o", usage, at=AT)


def test_without_a_provider_a_model_is_priced_by_its_family() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    prices = table(None)
    assert prices.price("gpt-4o-mini", usage, at=AT) == Decimal("0.75")  # 0.15 + 0.6
    assert prices.price("claude-haiku-4-5", usage, at=AT) == Decimal("6")  # 1 + 5
    assert prices.price("llama-3.1-8b-instruct", usage, at=AT) is None  # no family: not guessed


def test_self_hosted_openai_model_prices_when_the_provider_is_configured() -> None:
    provider = providers.pricing_provider("http://127.0.0.1:8000/v1", configured="openai")
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table(provider).price("gpt-4o-mini", usage, at=AT) == Decimal("0.75")


def test_a_provider_genai_prices_lacks_prices_from_the_price_file_only(tmp_path: Path) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table("vllm").price("gpt-4o-mini", usage, at=AT) is None
    path = write(tmp_path, "models:\n  gpt-4o-mini: {input: 0.01, output: 0.02}\n")
    assert table("vllm", path).price("gpt-4o-mini", usage, at=AT) == Decimal("0.03")


def test_every_bundled_model_prices_a_full_usage() -> None:
    """Regression guard: genai-prices raises on some usage shapes; none of ours may."""
    usage = Usage(
        input_tokens=100_000,
        output_tokens=50_000,
        cache_read_tokens=20_000,
        cache_write_tokens=10_000,
        reasoning_tokens=10_000,
    )
    count = 0
    for provider in bundled_providers:
        prices = table(provider.id)
        for model in provider.models:
            if not model.is_match(model.id):  # a few ids are not among their own aliases
                continue
            cost = prices.price(model.id, usage, at=AT)
            assert cost is not None and cost >= 0, (provider.id, model.id)
            count += 1
    assert count > 1_000


# ---- what cannot be priced -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        pytest.param("no-such-model", Usage(10, 10), id="unknown model"),
        pytest.param(None, Usage(10, 10), id="no model"),
        pytest.param("", Usage(10, 10), id="empty model"),
        pytest.param("gpt-4o", Usage(input_tokens=10), id="output not reported"),
        pytest.param("gpt-4o", Usage(output_tokens=10), id="input not reported"),
        pytest.param("gpt-4o", Usage(10, 10, cache_read_tokens=8, cache_write_tokens=8), id="cache > input"),
        pytest.param("gpt-4o", Usage(10, 10, reasoning_tokens=11), id="reasoning exceeds output"),
        pytest.param("my-model", Usage(input_tokens=10), id="price-file model, output not reported"),
    ],
)
def test_unpriceable_requests_cost_none_never_zero(tmp_path: Path, model: str | None, usage: Usage) -> None:
    path = write(tmp_path, "models:\n  my-model: {input: 1, output: 1}\n")
    assert table("openai", path).price(model, usage, at=AT) is None


def test_zero_tokens_of_a_known_model_cost_zero() -> None:
    assert table("openai").price("gpt-4o", Usage(0, 0), at=AT) == 0


# ---- the price file --------------------------------------------------------------------


def test_price_file_model_uses_every_rate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        models:
          my-llama-70b:
            input: 0.60
            output: 0.80
            cache_read: 0.06
            cache_write: 0.75
            reasoning: 0.90
        """,
    )
    usage = Usage(
        input_tokens=10_000,
        output_tokens=2_000,
        cache_read_tokens=4_000,
        cache_write_tokens=1_000,
        reasoning_tokens=500,
    )
    # 5,000 × 0.60 + 4,000 × 0.06 + 1,000 × 0.75 + 1,500 × 0.80 + 500 × 0.90 = 5,640 µ$
    assert table("openai", path).price("my-llama-70b", usage) == Decimal("0.00564")


def test_price_file_optional_rates_default_to_input_and_output(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m: {input: 2, output: 8}\n")
    assert read_price_file(path) == {"m": ModelRates(*(Decimal(v) for v in ("2", "8", "2", "2", "8")))}
    usage = Usage(input_tokens=1_000, output_tokens=1_000, cache_read_tokens=500, reasoning_tokens=500)
    assert table(None, path).price("m", usage) == Decimal("0.01")  # nothing discounted


def test_price_file_overrides_genai_prices_for_the_exact_name(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  gpt-4o: {input: 1, output: 2}\n")
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    prices = table("openai", path)
    assert prices.price("gpt-4o", usage, at=AT) == Decimal("3")
    assert prices.price("gpt-4o-2024-08-06", usage, at=AT) == Decimal("12.5")  # bundled: exact names only


def test_price_file_numbers_are_exact_decimals(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m: {input: 0.1, output: 0.2, cache_read: 1e-3, cache_write: 1_000.5}")
    rates = read_price_file(path)["m"]
    assert (rates.input, rates.output, rates.cache_read, rates.cache_write) == (
        Decimal("0.1"),
        Decimal("0.2"),
        Decimal("0.001"),
        Decimal("1000.5"),
    )
    cost = table(None, path).price("m", Usage(input_tokens=1, output_tokens=1))
    assert cost == Decimal("0.0000003") and str(cost) == "3E-7"  # float: 3.0000000000000004e-07


def test_price_file_model_names_keep_their_text(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  3.10: {input: 1, output: 1}\n")
    assert list(read_price_file(path)) == ["3.10"]


M = "models:\n  m: "  # a one-model price file, up to the model's entry


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(M + "{inptu: 1, output: 1}", "model 'm': unknown key(s) inptu", id="typo"),
        pytest.param(M + "{input: 1}", "model 'm': missing required price(s) output", id="no output"),
        pytest.param(M + "{output: 1}", "model 'm': missing required price(s) input", id="no input"),
        pytest.param(M + "{input: -1, output: 1}", "model 'm': input must be a finite number >= 0", id="neg"),
        pytest.param(M + "{input: cheap, output: 1}", "model 'm': input must be a number", id="word"),
        pytest.param(M + "{input: '0.5', output: 1}", "got '0.5'; write numbers unquoted", id="quoted"),
        pytest.param(M + "{input: true, output: 1}", "model 'm': input must be a number", id="bool"),
        pytest.param(M + "{input: ~, output: 1}", "model 'm': input must be a number", id="null"),
        pytest.param(M + "{input: .inf, output: 1}", "model 'm': input must be a finite", id="inf"),
        pytest.param(M + "{input: .nan, output: 1}", "model 'm': input must be a finite", id="nan"),
        pytest.param(M + "{input: 0x1F, output: 1}", "model 'm': input must be a finite", id="hex"),
        pytest.param(M + "1", "model 'm': expected a mapping of prices", id="not a mapping"),
        pytest.param(M + "{input: 1, output: 1}\n  m: {input: 2, output: 2}", "duplicate key 'm'", id="dup"),
        pytest.param("models:\n  yes: {input: 1, output: 1}", "model name True", id="bool name"),
        pytest.param("models: [m]", "'models' must map model names to prices", id="models list"),
        pytest.param("models:", "'models' must map model names to prices", id="models empty"),
        pytest.param("", "expected a mapping with the single key 'models'", id="empty file"),
        pytest.param("model:\n  m: {input: 1, output: 1}", "single key 'models'", id="top-level typo"),
        pytest.param("models: {m: {input: 1", "invalid YAML", id="syntax"),
    ],
)
def test_bad_price_file_is_rejected_at_load_naming_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(PriceFileError) as caught:
        PriceTable.load(provider="openai", price_file=path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_missing_price_file_is_a_price_file_error(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="nope.yaml: cannot read it"):
        PriceTable.load(provider=None, price_file=tmp_path / "nope.yaml")


def test_price_file_error_is_a_value_error() -> None:
    assert issubclass(PriceFileError, ValueError)


def test_empty_models_mapping_is_fine(tmp_path: Path) -> None:
    assert read_price_file(write(tmp_path, "models: {}\n")) == {}


# ---- offline, cached, fast ---------------------------------------------------------------


def test_no_network_and_no_thread_when_loading_and_pricing() -> None:
    """A fresh interpreter whose sockets and threads fail: genai-prices must not need either."""
    script = textwrap.dedent(
        """
        import socket, threading
        def refuse(*args, **kwargs):
            raise AssertionError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        def no_thread(self):
            raise AssertionError(f"thread started: {self.name}")
        threading.Thread.start = no_thread

        from llmobs.telemetry.pricing import PriceTable
        from llmobs.records import Usage
        for provider in (None, "openai", "anthropic", "azure"):
            prices = PriceTable.load(provider=provider, price_file=None)
            for model in ("gpt-4o", "claude-haiku-4-5", "unknown-model"):
                prices.price(model, Usage(1000, 100, 10, 10, 10))
        import genai_prices.update_prices as update
        assert update._shared_updater.thread is None
        assert threading.active_count() == 1
        print("offline ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "offline ok"


def test_bundled_data_is_used_even_if_someone_installed_an_auto_updated_snapshot() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
    try:
        assert table("openai").price("gpt-4o", usage, at=AT) == Decimal("2.5")
    finally:
        data_snapshot.set_custom_snapshot(None)


def test_model_lookup_runs_once_per_model_hits_and_misses_alike() -> None:
    calls: list[str] = []

    def find(model: str) -> None:
        calls.append(model)
        return None

    prices = PriceTable({}, find=find)
    for _ in range(3):
        assert prices.price("a", Usage(1, 1)) is None
        assert prices.price("b", Usage(1, 1)) is None
    assert calls == ["a", "b"]


def test_price_per_call_stays_well_under_a_millisecond(tmp_path: Path) -> None:
    """Measured 200-350 µs bundled (genai-prices' arithmetic), ~3 µs price file, ~1 µs miss."""
    prices = table("openai", write(tmp_path, "models:\n  m: {input: 1, output: 1}\n"))
    usage = Usage(input_tokens=1_000, output_tokens=500, cache_read_tokens=200, reasoning_tokens=100)
    for model, budget in (("gpt-4o", 2e-3), ("m", 1e-4), ("unknown", 1e-4)):
        prices.price(model, usage)  # warm the lookup cache
        start = time.perf_counter()
        for _ in range(200):
            prices.price(model, usage)
        per_call = (time.perf_counter() - start) / 200
        assert per_call < budget, (model, per_call)


# ---- providers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name", "pricing"),
    [
        ("https://api.openai.com/v1", "openai", "openai"),
        ("https://my-res.openai.azure.com/openai/deployments/x", "azure.ai.openai", "azure"),
        ("https://my-res.cognitiveservices.azure.com", "azure.ai.openai", "azure"),
        ("https://my-proj.services.ai.azure.com/models", "azure.ai.inference", "azure"),
        ("https://api.anthropic.com/v1", "anthropic", "anthropic"),
        ("https://generativelanguage.googleapis.com/v1beta/openai", "gcp.gemini", "google"),
        ("https://us-central1-aiplatform.googleapis.com/v1/projects/p", "gcp.vertex_ai", "google"),
        ("https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1", "aws.bedrock", "aws"),
        ("https://api.deepseek.com", "deepseek", "deepseek"),
        ("https://api.mistral.ai/v1", "mistral_ai", "mistral"),
        ("https://api.groq.com/openai/v1", "groq", "groq"),
        ("https://api.x.ai/v1", "x_ai", "x-ai"),
        ("https://api.perplexity.ai", "perplexity", "perplexity"),
        ("https://API.Together.xyz/v1", "together", "together"),
        ("https://openrouter.ai/api/v1", "openrouter", "openrouter"),
    ],
)
def test_known_hosts_map_to_both_vocabularies(url: str, name: str, pricing: str) -> None:
    assert providers.infer_provider(url) == providers.ProviderIds(name, pricing)
    assert providers.provider_name(url) == name
    assert providers.pricing_provider(url) == pricing


def test_every_mapped_pricing_id_exists_in_genai_prices_except_watsonx() -> None:
    bundled_ids = {p.id for p in bundled_providers}
    missing = {ids.pricing for _, ids in providers._TABLE} - bundled_ids
    assert missing == {"ibm.watsonx.ai"}


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://localhost:11434/v1", "https://llm.internal.example.com/v1"]
)
def test_unknown_hosts_have_no_provider_and_report_the_openai_api_flavor(url: str) -> None:
    assert providers.infer_provider(url) is None
    assert providers.pricing_provider(url) is None
    assert providers.provider_name(url) == "openai"


def test_lookalike_hosts_are_not_matched() -> None:
    assert providers.infer_provider("https://api.openai.com.evil.example/v1") is None
    assert providers.infer_provider("https://notapi.openai.com/v1") is None


@pytest.mark.parametrize(
    ("configured", "name", "pricing"),
    [
        ("mistral", "mistral_ai", "mistral"),
        ("mistral_ai", "mistral_ai", "mistral"),
        ("x-ai", "x_ai", "x-ai"),
        ("azure", "azure.ai.openai", "azure"),
        ("google", "gcp.gen_ai", "google"),
        ("aws.bedrock", "aws.bedrock", "aws"),
        ("OpenAI", "openai", "openai"),
        ("vllm", "vllm", "vllm"),
    ],
)
def test_configured_provider_wins_in_either_vocabulary(configured: str, name: str, pricing: str) -> None:
    url = "https://api.openai.com/v1"
    assert providers.provider_name(url, configured) == name
    assert providers.pricing_provider(url, configured) == pricing


def test_linear_fast_path_equals_genai_prices_for_every_flat_bundled_model() -> None:
    """The read-off rates must give genai-prices' own Decimal, to the last digit."""
    import random

    from genai_prices.data import providers as bundled
    from genai_prices.types import Usage as GenaiUsage

    from llmobs.telemetry.pricing import linear_rates

    rng = random.Random(7)
    flat = 0
    for provider in bundled:
        for info in provider.models:
            linear = linear_rates(provider, info)
            if linear is None:
                continue
            flat += 1
            i = rng.randint(0, 300_000)
            cr = rng.randint(0, i // 2)
            cw = rng.randint(0, i - cr) if rng.random() < 0.5 else 0
            o = rng.randint(0, 60_000)
            r = rng.randint(0, o)
            expected = info.calc_price(
                GenaiUsage(
                    input_tokens=i,
                    output_tokens=o,
                    cache_read_tokens=cr,
                    cache_write_tokens=cw,
                    output_reasoning_tokens=r,
                ),
                provider,
            ).total_price
            assert linear.cost(Usage(i, o, cr, cw, r)) == expected, (provider.id, info.id)
    assert flat > 1000  # most of the table takes the fast path


# ---- price variants: the tier or speed the response reports -------------------------------


def test_openai_priority_and_flex_tiers_are_priced_at_their_own_rates() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000, cache_read_tokens=0, cache_write_tokens=None)
    standard = table().price("gpt-5", usage, at=AT)
    assert standard == Decimal("0.01125")  # $1.25 and $10 per million
    for tier, expected in (("priority", "0.0225"), ("fast", "0.0225"), ("flex", "0.005625"), ("default", "0.01125")):
        assert table().price("gpt-5", usage, context={"service_tier": tier}) == Decimal(expected), tier


def test_anthropic_fast_mode_is_priced_at_its_own_rate() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000, cache_read_tokens=0, cache_write_tokens=0)
    anthropic = table("anthropic")
    assert anthropic.price("claude-opus-5", usage, context={"speed": "fast"}) == Decimal("0.06")  # $10 and $50
    assert anthropic.price("claude-opus-5", usage, context={"speed": "standard"}) == anthropic.price(
        "claude-opus-5", usage
    )


def test_a_context_no_variant_names_prices_as_without_one_and_is_not_remembered() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000, cache_read_tokens=0, cache_write_tokens=None)
    prices = table()
    standard = prices.price("gpt-5", usage)
    for i in range(500):  # an upstream inventing tiers must not grow the rate cache
        assert prices.price("gpt-5", usage, context={"service_tier": f"tier-{i}", "other": "x"}) == standard
    assert prices.price("gpt-4o-mini", usage, context={"service_tier": "flex"}) == prices.price("gpt-4o-mini", usage)
    assert len(prices._linear) <= 3


def test_every_price_variant_equals_genai_prices_with_its_context() -> None:
    """Fast path or not, a variant's price is genai-prices' own Decimal for that price_context."""
    from genai_prices.data import providers as bundled
    from genai_prices.types import Usage as GenaiUsage

    now = datetime.now(UTC)
    usage = Usage(input_tokens=120_000, output_tokens=30_000, cache_read_tokens=40_000, cache_write_tokens=0)
    genai = GenaiUsage(input_tokens=120_000, output_tokens=30_000, cache_read_tokens=40_000, cache_write_tokens=0)
    checked = 0
    for provider in bundled:
        prices = table(provider.id)
        for info in provider.models:
            if prices.price(info.id, usage, provider=provider.id, at=now) is None:
                continue  # its id is not a name genai-prices finds it by (e.g. Mistral's "codestral")
            for variant in info.price_variants or ():
                try:
                    expected = info.calc_price(genai, provider, genai_request_timestamp=now, price_context=variant.when)
                except Exception:  # noqa: BLE001 - a usage this model cannot price: not this test's subject
                    continue
                got = prices.price(info.id, usage, provider=provider.id, at=now, context=variant.when)
                assert got == expected.total_price, (provider.id, info.id, variant.when)
                checked += 1
    assert checked > 200


def test_a_model_resold_by_another_provider_is_priced_as_genai_prices_prices_it_there() -> None:
    """genai-prices ignores the tier for a model it finds through a reseller (Azure: OpenAI's gpt-5.4)."""
    import genai_prices

    usage = Usage(input_tokens=10_000, output_tokens=500, cache_read_tokens=0, cache_write_tokens=None)
    azure = table("azure")
    for tier in ("priority", "fast", "flex"):
        got = azure.price("gpt-5.4", usage, context={"service_tier": tier})
        expected = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=10_000, output_tokens=500, cache_read_tokens=0),
            "gpt-5.4",
            provider_id="azure",
            price_context={"service_tier": tier},
        ).total_price
        assert got == expected == azure.price("gpt-5.4", usage), tier
