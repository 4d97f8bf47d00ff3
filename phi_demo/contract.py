"""What an engine is: the one contract that the local engine, the ZeroGPU wrapper, the
OpenAI-compatible server backend and the benchmark's engine all implement, and the data that
crosses it. Torch-free, so the page, the CLI and the transcription are typed against it
without importing a model.

A stream may first yield a Notice (what a long prefill is doing, what was left out), then yields text pieces
(str) as they are decoded, then exactly one GenerationStats; closing it early stops the
model. Attention is a setting of the shared model, not of a request: `set_attention`
changes it for everyone, between answers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Callable,
    Iterable,
    Iterator,
    Literal,
    NotRequired,
    Protocol,
    TypedDict,
    Union,
    runtime_checkable,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL import Image

    from phi_demo.settings import GenerationSettings as GenerationOptions


@dataclass(frozen=True)
class Notice:
    """What the engine is doing before the first token, when that takes a while (reading an
    image or a long recording): the page shows it instead of nothing. When the oldest
    messages were left out to fit the context budget, a Notice comes first and says how
    many, before any text (the API's response headers carry it)."""

    text: str
    messages_left_out: int = 0


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class GenerationStats:
    """What one answer cost, and why it ended."""

    prompt_tokens: int
    new_tokens: int
    ttft_s: float  # request start -> first new token (prefill included)
    total_s: float
    decode_tok_s: float  # new tokens after the first / time after the first
    cancelled: bool = False
    cached_tokens: int = 0  # prompt tokens served from the previous turn's KV cache
    fast_decode: bool = False  # static cache + compiled decode step
    # "stop": the model ended its turn; "length": max new tokens reached; "cancelled": Stop,
    # a closed tab or a dropped client.
    finish_reason: FinishReason = "stop"
    # Oldest messages of the conversation left out to fit the context budget (said on the page).
    messages_left_out: int = 0

    def summary(self) -> str:
        tail = " · stopped" if self.cancelled else ""
        cached = f", {self.cached_tokens} cached" if self.cached_tokens else ""
        fast = " · fast decode" if self.fast_decode else ""
        return (f"{self.new_tokens} tokens · {self.decode_tok_s:.1f} tok/s{fast} · "
                f"first token {self.ttft_s:.2f} s · prompt {self.prompt_tokens} tokens{cached}{tail}")


def finish_reason(cancelled: bool, new_tokens: int, max_new_tokens: int) -> FinishReason:
    if cancelled:
        return "cancelled"
    return "length" if new_tokens >= max_new_tokens else "stop"


# What a stream yields.
Piece = Union[str, Notice, GenerationStats]


@dataclass(frozen=True)
class ModelFacts:
    """What the sidebar (and a feedback record) says about the model that answers. A local
    engine fills the model's side; a server backend fills `server` and `served_models`."""

    model: str
    revision: str | None = None
    folder: str | None = None
    device: str | None = None
    dtype: str | None = None
    attention: str | None = None
    adapters: tuple[str, ...] = ()
    load_seconds: float | None = None
    weights_gb: float | None = None
    quantized: str | None = None  # how, and why (int4 to fit this machine, ...)
    placement: str | None = None  # --offload: the devices the layers are on
    fast_decode: str | None = None
    cuda_allocated_gb: float | None = None
    # The most prompt tokens one answer reads; past it the oldest messages are left out.
    context_budget: int | None = None
    server: str | None = None  # --backend openai: the server's URL
    served_models: tuple[str, ...] = ()


EngineState = Literal["idle", "loading", "ready", "error"]


@dataclass
class EngineStatus:
    state: EngineState
    message: str = ""
    facts: ModelFacts | None = None  # once a model is ready


@dataclass(frozen=True)
class AttentionOption:
    name: str
    available: bool
    reason: str = ""


@dataclass(frozen=True)
class MediaItem:
    """One image or clip of a request, in prompt order. `group` numbers the runs of adjacent
    slots of one kind (their placeholder tokens touch), `key` is a hash of the decoded content:
    every image of one size has the same placeholder ids, so ids alone cannot tell them apart."""

    kind: str  # "image" or "audio"
    key: str
    group: int


class PromptMessage(TypedDict):
    """One message of a request's conversation, as data: the prompt is rendered from these."""

    role: str  # "system", "user", "assistant" or "tool"
    text: str
    media: list[str]  # the kinds of its media in order, "image" or "audio"
    tools: NotRequired[str]  # a system message's functions, as JSON text
    tool_calls: NotRequired[str]  # the calls an assistant message made, as JSON text


@dataclass(frozen=True)
class LeftClip:
    """An audio clip that left the prompt with no transcript yet: the engine transcribes it
    (once: transcripts are cached by `key`, the clip's content) and puts the transcript in
    place of the first EARLIER_CLIP note of message `message`."""

    message: int
    key: str
    audio: object  # float32 16 kHz mono array


@dataclass
class ModelRequest:
    """Everything the engine needs for one answer."""

    prompt: str
    images: list[Image.Image] = field(default_factory=list)  # RGB, in prompt order
    audios: list[npt.NDArray[np.float32]] = field(default_factory=list)  # 16 kHz mono, in prompt order
    # The same conversation for chat-completions servers: role, text, and the kinds of its
    # media in order ("image"/"audio"), which index into `images`/`audios`.
    messages: list[PromptMessage] = field(default_factory=list)
    # Every image and clip in prompt order, with its content key and slot group: KV reuse
    # reads these instead of re-parsing the prompt.
    media: list[MediaItem] = field(default_factory=list)
    # A short request (a live-transcription window) that may run between the tokens of a
    # running answer instead of waiting for its end.
    urgent: bool = False
    # How many of the conversation's oldest audio clips the prompt leaves out to stay within
    # the clip limit (a long voice conversation); the page says so.
    clips_left_out: int = 0
    # The same for images (video frames and PDF pages count as images).
    images_left_out: int = 0
    # Clips that left the prompt this turn and still need their transcript.
    clips_to_transcribe: list[LeftClip] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """Which LoRA the original Phi-4 code used: any image -> vision, audio only -> speech."""
        if self.images:
            return "vision"
        if self.audios:
            return "speech"
        return "text"


@runtime_checkable
class ChatEngine(Protocol):
    """What the page, the CLI, the transcription and the API may use of an engine: nothing
    else (no getattr for attributes some engines lack)."""

    is_tiny: bool  # the tiny random-weight model: the page says its answers are noise
    on_space: bool  # running on a Hugging Face Space
    device: str  # "cpu", "cuda", "mps", or the server's name for a server backend
    quantize: str  # "none", "int4", "4bit" or "8bit" (what the weights are, after "auto")
    # Every switch of the shared model's attention counts one: a tab tells another user's
    # change from its own.
    attn_changes: int
    # Work must run on the request's own thread (ZeroGPU attaches the GPU per request): no
    # background workers, so live windows run inline.
    request_thread_only: bool
    # A start-up setting this machine cannot honour (said once, nothing loaded in its place).
    config_error: str | None

    @property
    def attn(self) -> str:
        """The attention implementation every answer uses now."""
        ...

    def status(self) -> EngineStatus: ...

    def attention_options(self) -> list[AttentionOption]:
        """What can run here (empty: a server decides)."""
        ...

    def load(self) -> object:
        """Make the model ready; raises ModelUnavailable with a sentence."""
        ...

    def load_in_background(self) -> threading.Thread: ...

    def set_attention(self, name: str) -> str:
        """Switch the shared model's attention once the running answer ends; returns the
        implementation now in use. Raises ValueError with the reason for one that cannot run."""
        ...

    def stream(self, request: ModelRequest, gen: GenerationOptions, cancel: threading.Event) -> Iterator[Piece]: ...


def collect(pieces: Iterable[Piece], on_text: Callable[[str], None] | None = None) -> tuple[str, GenerationStats | None]:
    """Read a whole stream: (answer text, its stats). `on_text` sees each piece as it comes."""
    text: list[str] = []
    stats: GenerationStats | None = None
    for piece in pieces:
        if isinstance(piece, str):
            text.append(piece)
            if on_text:
                on_text(piece)
        elif isinstance(piece, GenerationStats):
            stats = piece
    return "".join(text), stats
