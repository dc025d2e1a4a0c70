"""A concrete upstream behind a model alias: where to send, with which key, timeouts and headers."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict
from yarl import URL

USER_AGENT = "Triage"


@dataclass(eq=False)
class Deployment:
    """One concrete upstream behind a model alias.

    ``model`` is the id sent upstream: the bare provider id for
    ``provider="openai"`` (any OpenAI-compatible endpoint), or the
    provider-prefixed litellm id (``anthropic/claude-...``) for ``"litellm"``.
    """

    name: str
    model: str
    provider: str = "openai"
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    stream_idle_timeout: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    supports_reasoning: bool = False
    drop_params: bool = True           # litellm path: drop params the provider lacks (litellm_settings.drop_params)
    # Precomputed once so the hot path only does lookups.
    url: str = field(init=False, repr=False)
    _url: URL = field(init=False, repr=False)
    _headers: CIMultiDict[str] = field(init=False, repr=False)
    _timeout: aiohttp.ClientTimeout = field(init=False, repr=False)
    _stream_timeout: aiohttp.ClientTimeout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.provider not in ("openai", "litellm"):
            raise ValueError(f"deployment {self.name!r}: provider must be 'openai' or 'litellm'")
        timeout = float(self.timeout or 60.0)
        idle = float(self.stream_idle_timeout or timeout)
        base = (self.api_base or ("https://api.openai.com/v1" if self.provider == "openai" else "")).rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self._url = URL(self.url)  # parsed once, not by aiohttp on every request
        # Built once in the shape aiohttp keeps (so it is not converted per request), and complete: with a
        # user-agent of our own, aiohttp adds its defaults without the per-request skip-header copies.
        h: CIMultiDict[str] = CIMultiDict({"content-type": "application/json", "accept": "application/json",
                                           "user-agent": USER_AGENT})
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        h.update(self.headers)
        self._headers = h
        connect = min(timeout, 10.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect)
        # A stream may legitimately run for long; what must not happen is silence.
        # sock_read also bounds the wait for response headers (time to first byte).
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=idle)

    def scrub(self, text: str) -> str:
        # very short keys are test placeholders; replacing them would mangle ordinary words
        if self.api_key and len(self.api_key) >= 8 and self.api_key in text:
            text = text.replace(self.api_key, "***")
        return text
