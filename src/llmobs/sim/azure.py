"""Azure OpenAI paths: ``/openai/deployments/{deployment}/<api path>?api-version=...``.

The same handlers answer; the body's ``model`` is ignored, and the answer's ``model`` is the
deployment's model: ``DEPLOYMENTS[deployment]``, or the deployment name itself when it is not
in the table (so ``sim-error-429`` as a deployment name is that fault model). A request
without ``api-version`` gets Azure's 404 ``{"error": {"code": "404", "message": "Resource not
found"}}``. The key may come in ``api-key`` (not checked). Chat answers carry Azure's content
filter results: ``prompt_filter_results`` (streams: a first chunk with ``choices: []`` and
empty ``id``/``model``, as Azure sends) and ``content_filter_results`` on each choice.
"""

from __future__ import annotations

import re
from typing import Any

DEPLOYMENTS = {
    "my-gpt4o": "gpt-4o-2024-08-06",
    "my-gpt4o-mini": "gpt-4o-mini-2024-07-18",
    "my-embedding": "text-embedding-3-small",
    "my-image": "gpt-image-1",
    "my-dalle": "dall-e-3",
    "my-whisper": "whisper-1",
    "my-transcribe": "gpt-4o-transcribe",
    "my-tts": "gpt-4o-mini-tts",
}
NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
_PATH = re.compile(r"/openai/deployments/(?P<deployment>[^/]+)(?P<rest>/.+)$")
_SAFE = {"filtered": False, "severity": "safe"}
FILTER_RESULTS: dict[str, Any] = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


def split(path: str) -> tuple[str, str] | None:
    """(deployment, API path) of an Azure deployment path, else None."""
    m = _PATH.search(path)
    return (m.group("deployment"), m.group("rest")) if m else None


def served_model(deployment: str) -> str:
    """The model an Azure deployment serves (see the module docstring)."""
    return DEPLOYMENTS.get(deployment, deployment)


def prompt_filter_results() -> list[dict[str, Any]]:
    """Azure's ``prompt_filter_results`` for one prompt that passed every filter."""
    return [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}]
