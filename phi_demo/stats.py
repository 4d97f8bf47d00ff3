"""What the engine reports (its state, what one answer cost); shared by the local engine and
remote backends, so no torch here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationStats:
    prompt_tokens: int
    new_tokens: int
    ttft_s: float  # request start -> first new token (prefill included)
    total_s: float
    decode_tok_s: float  # new tokens after the first / time after the first
    cancelled: bool = False
    cached_tokens: int = 0  # prompt tokens served from the previous turn's KV cache
    fast_decode: bool = False  # static cache + compiled decode step

    def summary(self) -> str:
        tail = " · stopped" if self.cancelled else ""
        cached = f", {self.cached_tokens} cached" if self.cached_tokens else ""
        fast = " · fast decode" if self.fast_decode else ""
        return (f"{self.new_tokens} tokens · {self.decode_tok_s:.1f} tok/s{fast} · "
                f"first token {self.ttft_s:.2f} s · prompt {self.prompt_tokens} tokens{cached}{tail}")


@dataclass
class EngineStatus:
    state: str  # "idle", "loading", "ready" or "error"
    message: str = ""
    info: dict = field(default_factory=dict)
