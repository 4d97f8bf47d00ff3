"""Every setting in one place: defaults, PHI_DEMO_* environment variables, flags.

Flags win over environment variables, which win over defaults. No torch, no gradio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from phi_demo.errors import SettingError, UserInputError

DEFAULT_MODEL = "microsoft/Phi-4-multimodal-instruct"
# The hub's main branch still holds the old remote code (model_type phi4mm), which
# does not import on transformers 5; the native weights live on this ref.
DEFAULT_REVISION = "refs/pr/70"
TINY_MODEL = "tiny-random"
ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."



def cache_root() -> Path:
    """The app's own folder: the tiny model, downloads, feedback (PHI_DEMO_CACHE)."""
    return Path(os.environ.get("PHI_DEMO_CACHE", Path.home() / ".cache" / "phi-demo"))


@dataclass(frozen=True)
class GenerationSettings:
    """What a user may change per request in the sidebar (or the API)."""

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = None
    # Only the benchmark sets this: it forces exactly max_new_tokens tokens.
    min_new_tokens: int = 0

    # What a user may set (the sidebar, /chat); min_new_tokens is the benchmark's own.
    USER_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "seed")

    LIMITS = {
        "max_new_tokens": (1, 8192),
        "temperature": (0.01, 2.0),
        "top_p": (0.01, 1.0),
        "top_k": (0, 1000),
        "repetition_penalty": (0.5, 2.0),
        "min_new_tokens": (0, 8192),
        "seed": (0, 2**32 - 1),
    }

    @classmethod
    def from_values(cls, **values) -> "GenerationSettings":
        """Build from loosely typed UI/API values, refusing out-of-range ones with a sentence."""
        clean = {}
        for f in fields(cls):
            if f.name not in values or values[f.name] is None:
                continue
            v = values[f.name]
            try:
                if f.name == "do_sample":
                    if not isinstance(v, (bool, int)) or v not in (0, 1):
                        raise UserInputError(f"The setting do_sample must be true or false, not {v!r:.40}.")
                    clean[f.name] = bool(v)
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                    raise TypeError
                if f.name == "seed":
                    if v == "" or float(v) < 0:
                        continue  # random
                    clean[f.name] = _whole(v)
                elif f.name in ("max_new_tokens", "top_k", "min_new_tokens"):
                    clean[f.name] = _whole(v)
                else:
                    clean[f.name] = float(v)
            except (TypeError, ValueError, OverflowError):
                raise UserInputError(f"The setting {f.name} must be a number, not {v!r:.40}.") from None
            if f.name in cls.LIMITS:
                lo, hi = cls.LIMITS[f.name]
                if not lo <= clean[f.name] <= hi:
                    raise UserInputError(f"The setting {f.name} must be between {lo} and {hi}; it was {v}.")
        return cls(**clean)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _whole(v) -> int:
    """An integer from 3, 3.0 or "3"; 3.5, "nan" and infinities raise ValueError/OverflowError."""
    x = float(v)
    if x != int(x):
        raise ValueError
    return int(x)


@dataclass
class AppSettings:
    """How the app is started. Each field has a flag (--max-images) and an env var (PHI_DEMO_MAX_IMAGES)."""

    backend: str = field(default="local", metadata={"help": "local (load the model here) or openai (a server)",
                                                    "choices": ("local", "openai")})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server, e.g. http://host:8000/v1"})
    api_key: str | None = field(default=None, metadata={"help": "bearer token for the server"})
    served_model: str | None = field(default=None, metadata={"help": "model name the server knows (default: its first)"})
    served_vision_model: str | None = field(default=None, metadata={"help": "name for requests with images (vLLM: the vision LoRA)"})
    served_speech_model: str | None = field(default=None, metadata={"help": "name for audio-only requests (vLLM: the speech LoRA)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": f"hub id, local folder, or '{TINY_MODEL}'"})
    revision: str = field(default=DEFAULT_REVISION, metadata={"help": "hub revision (only for hub ids)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    dtype: str = field(default="auto", metadata={"help": "auto, bfloat16, float16, float32", "choices": DTYPE_CHOICES})
    attn: str = field(default="auto", metadata={"help": "attention implementation", "choices": ATTENTION_CHOICES})
    host: str | None = field(default=None, metadata={"help": "bind address (default GRADIO_SERVER_NAME or 127.0.0.1)"})
    port: int | None = field(default=None, metadata={"help": "port (default GRADIO_SERVER_PORT or 7860)"})
    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "default system prompt"})
    max_new_tokens: int = field(default=512, metadata={"help": "default max new tokens"})
    max_images: int = field(default=8, metadata={"help": "most images in one conversation"})
    max_audio_clips: int = field(default=4, metadata={"help": "most audio clips the model hears in one conversation (the oldest are left out past it)"})
    max_audio_seconds: float = field(default=300.0, metadata={"help": "longest audio clip accepted, seconds"})
    max_video_frames: int = field(default=8, metadata={
        "help": "most frames taken from one video (one per 2 s of clip, evenly spaced; they count as images)"})
    max_video_seconds: float = field(default=300.0, metadata={"help": "longest video accepted, seconds"})
    max_recording_seconds: float = field(default=7200.0, metadata={
        "help": "longest recording the Audio file tab and `transcribe`/`summarize` accept, seconds"})
    summary_part_seconds: float = field(default=1800.0, metadata={
        "help": "longest audio summarised in one request; longer recordings are summarised by parts"})
    vad: str = field(default="silero", metadata={
        "help": "voice-activity detector for phrase ends and chunking: silero (silero-vad; the energy "
                "threshold if it cannot load) or energy", "choices": ("silero", "energy")})
    max_file_size: str = field(default="50mb", metadata={"help": "largest upload Gradio accepts"})
    chats_dir: str | None = field(default=None, metadata={
        "help": "where the media of saved chats are kept, by content hash (default: chats/ in the app's cache "
                "folder, PHI_DEMO_CACHE)"})
    chats_budget: str = field(default="2gb", metadata={
        "help": "most disk the media of saved chats may take; the least recently used go first"})
    feedback_file: str | None = field(default=None, metadata={
        "help": "JSONL file for 👍/👎 on answers (default: feedback.jsonl in the app's cache folder; "
                "on a Space, off unless set); 'off' turns it off"})
    quantize: str = field(default="auto", metadata={
        "help": "auto (int4 on a CPU that cannot hold bf16, or a CPU-only Space), none, int4 (CPU: decoder and "
                "LM head), 4bit or 8bit (bitsandbytes, for a GPU; decoder only)",
        "choices": ("auto", "none", "int4", "4bit", "8bit")})
    int4_cache: str | None = field(default=None, metadata={
        "help": "folder where --quantize int4 keeps the quantized weights it made at the first start, so later "
                "starts read them instead of quantizing (default: int4/ in the app's cache folder, "
                "PHI_DEMO_CACHE); 'off' turns it off"})
    int4_cache_budget: str = field(default="10gb", metadata={
        "help": "most disk the int4 cache may take (a full-size entry is about 4.5 GB); the least recently used "
                "entries go first, and an entry larger than this is not written"})
    offload: bool = field(default=False, metadata={"help": "spread the model over GPU and CPU (accelerate)"})
    kv_reuse: bool = field(default=True, metadata={"help": "reuse the previous turn's KV cache in a chat"})
    fast_decode: bool = field(default=False, metadata={"help": "static KV cache + torch.compile'd decode step "
                                                               "(compiles for a while at start; best on a GPU)"})
    compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend for --fast-decode "
                                                                      "('eager' checks the graph without compiling)"})
    share: bool = field(default=False, metadata={"help": "create a public gradio.live link"})
    offline: bool = field(default=False, metadata={"help": "never contact the hub (also HF_HUB_OFFLINE=1)"})

    @property
    def chats_folder(self) -> Path:
        return Path(self.chats_dir).expanduser() if self.chats_dir else cache_root() / "chats"

    @property
    def is_tiny(self) -> bool:
        return self.model == TINY_MODEL

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
        """One flag per field (all, or those named in `only`), plus --config."""
        for f in fields(cls):
            if only is not None and f.name not in only:
                continue
            flag = "--" + f.name.replace("_", "-")
            env = "PHI_DEMO_" + f.name.upper()
            help_ = f"{f.metadata.get('help', '')} [env {env}]"
            if f.type in ("bool", bool):
                p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
            else:
                p.add_argument(flag, default=None, help=help_, choices=f.metadata.get("choices"))
        p.add_argument("--config", default=None,
                       help="settings file (.toml or .json) with the same names as the flags [env PHI_DEMO_CONFIG]")
        return p

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="app.py", description="Chat with Phi-4-multimodal-instruct in the browser.")
        return cls.add_arguments(p)

    @classmethod
    def load(cls, argv: list[str] | None = None, environ: dict | None = None) -> "AppSettings":
        return cls.resolve(vars(cls.parser().parse_args(argv)), environ)

    @classmethod
    def resolve(cls, flags: dict, environ: dict | None = None) -> "AppSettings":
        """Flags (non-None) win over PHI_DEMO_* variables, which win over the config file."""
        environ = os.environ if environ is None else environ
        config_path = flags.get("config") or environ.get("PHI_DEMO_CONFIG")
        config = read_config(config_path) if config_path else {}
        values = {}
        for f in fields(cls):
            env = "PHI_DEMO_" + f.name.upper()
            sources = ((flags.get(f.name), "--" + f.name.replace("_", "-")), (environ.get(env), env),
                       (config.get(f.name), f"{f.name} in {config_path}"))
            for raw, where in sources:
                if raw is not None:
                    values[f.name] = _convert(f, raw, where)
                    break
        s = cls(**values)
        if environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
            s.offline = True
        # A Space must listen on all interfaces; everywhere else only this machine may connect.
        if s.host is None and not environ.get("GRADIO_SERVER_NAME"):
            s.host = "0.0.0.0" if environ.get("SPACE_ID") else "127.0.0.1"
        return s


def read_config(path: str) -> dict:
    """A .toml or .json file of settings; keys may use dashes or underscores."""

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh) if str(path).endswith(".toml") else json.load(fh)
    except OSError as e:
        raise SettingError(f"Cannot read the settings file {path}: {e.strerror}.") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise SettingError(f"The settings file {path} is not valid: {e}") from None
    if not isinstance(data, dict):
        raise SettingError(f"The settings file {path} must hold a table of settings.")
    known = {f.name for f in fields(AppSettings)}
    clean = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(clean) - known)
    if unknown:
        raise SettingError(f"The settings file {path} has unknown settings: {', '.join(unknown)}.")
    return clean


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _convert(f: dataclasses.Field, raw, where: str):
    """A flag, variable or config value as the field's type; a SettingError names the
    setting, the value and what is allowed."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))

    def refuse(allowed: str):
        return SettingError(f"{where} = {raw!r:.60}: {f.name} must be {allowed}.")

    from_file = not isinstance(raw, str)  # flags and variables are text; a config file is typed
    if "bool" in kind:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise refuse("true or false")
    if isinstance(raw, bool) or (from_file and not isinstance(raw, (int, float))
                                  and ("int" in kind or "float" in kind)):
        raise refuse("a number")
    if "int" in kind:
        try:
            value = _whole(raw)
        except (TypeError, ValueError, OverflowError):
            raise refuse("a whole number") from None
        if value < 0:
            raise refuse("zero or more")
        return value
    if "float" in kind:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise refuse("a number") from None
        if not value >= 0 or value == float("inf"):
            raise refuse("a finite number, zero or more")
        return value
    if not isinstance(raw, str):
        raise refuse("text")
    if f.metadata.get("choices") and raw not in f.metadata["choices"]:
        raise refuse("one of " + ", ".join(f.metadata["choices"]))
    return raw



def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)])


