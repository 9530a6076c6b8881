"""Which GenAI provider an upstream is: its `gen_ai.provider.name` and its genai-prices id.

The two vocabularies differ (semconv `mistral_ai`, `x_ai`, `aws.bedrock`, `azure.ai.openai`,
`gcp.gemini`; genai-prices `mistral`, `x-ai`, `aws`, `azure`, `google`), so each row of the
table carries both. A host not in the table (localhost, a vLLM box, a company gateway) is
unknown: None, and no guess is made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

# Semconv asks for the instrumentation's "best knowledge" and calls the attribute a
# discriminator of the telemetry *format flavor*. Every upstream we proxy speaks the OpenAI
# API, so an unknown one is reported as `openai`, as the OpenAI client instrumentations do.
FALLBACK_NAME = "openai"


@dataclass(frozen=True, slots=True)
class ProviderIds:
    """One provider under both names."""

    name: str  # gen_ai.provider.name: a semconv well-known value, or a lowercase custom one
    pricing: str  # genai-prices provider id; one genai-prices lacks means "no bundled prices"


# (host patterns, ids): fnmatch patterns, matched against the lowercased host alone.
_TABLE: tuple[tuple[tuple[str, ...], ProviderIds], ...] = (
    (("api.openai.com",), ProviderIds("openai", "openai")),
    (("*.openai.azure.com", "*.cognitiveservices.azure.com"), ProviderIds("azure.ai.openai", "azure")),
    (("*.services.ai.azure.com", "*.models.ai.azure.com"), ProviderIds("azure.ai.inference", "azure")),
    (("api.anthropic.com",), ProviderIds("anthropic", "anthropic")),
    (("generativelanguage.googleapis.com",), ProviderIds("gcp.gemini", "google")),
    (("aiplatform.googleapis.com", "*-aiplatform.googleapis.com"), ProviderIds("gcp.vertex_ai", "google")),
    (("bedrock-runtime.*.amazonaws.com",), ProviderIds("aws.bedrock", "aws")),
    (("api.deepseek.com",), ProviderIds("deepseek", "deepseek")),
    (("api.mistral.ai",), ProviderIds("mistral_ai", "mistral")),
    (("api.groq.com",), ProviderIds("groq", "groq")),
    (("api.x.ai",), ProviderIds("x_ai", "x-ai")),
    (("api.perplexity.ai",), ProviderIds("perplexity", "perplexity")),
    (("api.cohere.ai", "api.cohere.com"), ProviderIds("cohere", "cohere")),
    (("api.moonshot.ai", "api.moonshot.cn"), ProviderIds("moonshot_ai", "moonshotai")),
    (("*.ml.cloud.ibm.com",), ProviderIds("ibm.watsonx.ai", "ibm.watsonx.ai")),  # not in genai-prices
    # Not semconv well-known values: the genai-prices id doubles as the custom name.
    (("api.together.xyz", "api.together.ai"), ProviderIds("together", "together")),
    (("api.fireworks.ai",), ProviderIds("fireworks", "fireworks")),
    (("openrouter.ai", "api.openrouter.ai"), ProviderIds("openrouter", "openrouter")),
    (("api.cerebras.ai",), ProviderIds("cerebras", "cerebras")),
    (("api.novita.ai",), ProviderIds("novita", "novita")),
)

# Names a configured provider may also go by, beyond each row's own two.
_ALIASES = {
    "google": ProviderIds("gcp.gen_ai", "google"),  # any Google endpoint: Gemini API or Vertex
    "gcp.gen_ai": ProviderIds("gcp.gen_ai", "google"),
}


def _by_name() -> dict[str, ProviderIds]:
    """Every name a configured provider may be given by: semconv value or genai-prices id."""
    names: dict[str, ProviderIds] = {}
    for _, ids in _TABLE:
        names.setdefault(ids.name, ids)
        names.setdefault(ids.pricing, ids)  # first row wins: "azure" means Azure OpenAI
    return names | _ALIASES


_BY_NAME = _by_name()


def infer_provider(upstream_url: str) -> ProviderIds | None:
    """The provider serving `upstream_url`, or None for a host not in the table (e.g. localhost)."""
    host = (urlsplit(upstream_url).hostname or "").lower()
    for patterns, ids in _TABLE:
        if any(fnmatchcase(host, pattern) for pattern in patterns):
            return ids
    return None


def lookup(name: str) -> ProviderIds:
    """A configured provider named in either vocabulary; an unknown name (e.g. "vllm") is kept for both."""
    key = name.strip().lower()
    return _BY_NAME.get(key) or ProviderIds(key, key)


def resolve(upstream_url: str, configured: str | None = None) -> ProviderIds | None:
    """The configured provider if any, else the one inferred from the upstream host, else None."""
    return lookup(configured) if configured else infer_provider(upstream_url)


def provider_name(upstream_url: str, configured: str | None = None) -> str:
    """The `gen_ai.provider.name` value; "openai" (the API flavor) when the provider is unknown."""
    ids = resolve(upstream_url, configured)
    return FALLBACK_NAME if ids is None else ids.name


def pricing_provider(upstream_url: str, configured: str | None = None) -> str | None:
    """The genai-prices id to hand to `PriceTable.load`; None when the provider is unknown."""
    ids = resolve(upstream_url, configured)
    return None if ids is None else ids.pricing
