"""Upstream clients: reaching a provider, classifying its failures, and the retry/fallback chain.

``openai_http`` speaks the OpenAI wire format over one keep-alive pool (``http1``);
``litellm_adapter`` covers the other providers; ``errors`` maps every failure
onto :class:`UpstreamError`; ``chain`` runs one step over a model chain with
retries, fallbacks and cooldowns, sized to its budget.
"""

from router.upstream.deployment import Deployment
from router.upstream.errors import UpstreamError, classify_status, http_error, parse_retry_after, transport_error
from router.upstream.openai_http import Upstream

__all__ = ["Deployment", "Upstream", "UpstreamError", "classify_status", "http_error", "parse_retry_after",
           "transport_error"]
