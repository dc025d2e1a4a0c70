"""A concrete upstream behind a model alias: where to send, with which key, timeouts and headers."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDict

from router.upstream.http1 import Target

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
    _headers: CIMultiDict[str] = field(init=False, repr=False)
    _target: Target | None = field(init=False, repr=False)        # chat completions; None: unusable URL
    _embed_target: Target | None = field(init=False, repr=False)
    _total: float = field(init=False, repr=False)
    _connect: float = field(init=False, repr=False)
    _idle: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.provider not in ("openai", "litellm"):
            raise ValueError(f"deployment {self.name!r}: provider must be 'openai' or 'litellm'")
        timeout = float(self.timeout or 60.0)
        idle = float(self.stream_idle_timeout or timeout)
        base = (self.api_base or ("https://api.openai.com/v1" if self.provider == "openai" else "")).rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        # Complete and case-insensitive: a configured header replaces ours of the same name.
        h: CIMultiDict[str] = CIMultiDict({"content-type": "application/json", "accept": "application/json",
                                           "user-agent": USER_AGENT})
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        h.update(self.headers)
        self._headers = h
        # The request heads are built once here, so a request only appends its length and body.
        self._target = self._embed_target = None
        if self.provider == "openai":
            try:
                self._target = Target(self.url, h)
                self._embed_target = Target(base + "/embeddings", h)
            except ValueError:
                pass  # reported as a connect error on use, as before
        # A call has `timeout` in all; a stream may legitimately run for long, what must not happen is
        # silence: `idle` between reads, which also bounds the wait for the response head.
        self._total = timeout
        self._connect = min(timeout, 10.0)
        self._idle = idle

    def scrub(self, text: str) -> str:
        # very short keys are test placeholders; replacing them would mangle ordinary words
        if self.api_key and len(self.api_key) >= 8 and self.api_key in text:
            text = text.replace(self.api_key, "***")
        return text
