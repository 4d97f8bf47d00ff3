"""Every setting in one place: the start-up settings (flags, PHI_DEMO_* environment variables,
a TOML or JSON file) and the per-request generation settings. No torch, no gradio.

Flags win over environment variables, which win over the settings file, which wins over the
defaults. pydantic converts and checks every value; a value that cannot be used becomes one
sentence that names the setting, where the value came from and what is allowed.
`python -m phi_demo.settings --markdown` writes docs/CONFIGURATION.md from the fields below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast, get_args, get_origin, get_type_hints

from annotated_types import Ge, Le
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from phi_demo import __version__
from phi_demo.errors import SettingError, UserInputError

DEFAULT_MODEL = "microsoft/Phi-4-multimodal-instruct"
# The hub's main branch still holds the old remote code (model_type phi4mm), which
# does not import on transformers 5; the native weights live on this ref.
DEFAULT_REVISION = "refs/pr/70"
TINY_MODEL = "tiny-random"
Attention = Literal["auto", "eager", "sdpa", "flash_attention_2"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
ATTENTION_CHOICES: tuple[str, ...] = get_args(Attention)
DTYPE_CHOICES: tuple[str, ...] = get_args(Dtype)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
ENV_PREFIX = "PHI_DEMO_"

# Errors that mean "a number, but outside the allowed range" (a whole number too large for
# pydantic to read is one of them).
_OUT_OF_RANGE = {"greater_than_equal", "less_than_equal", "greater_than", "less_than", "int_parsing_size"}


def cache_root() -> Path:
    """The app's own folder: the tiny model, downloads, feedback (PHI_DEMO_CACHE)."""
    return Path(os.environ.get("PHI_DEMO_CACHE", Path.home() / ".cache" / "phi-demo"))


def _no_bool(value: object) -> object:
    # pydantic reads True as 1: a number setting given true/false is a mistake, not a 1.
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "Input should be a number, not true or false")
    return value


def _switch_text(value: object) -> object:
    # An empty variable (PHI_DEMO_SHARE=) has always meant off; pydantic would refuse it.
    if isinstance(value, str):
        return value.strip() or False
    return value


Number = BeforeValidator(_no_bool)  # marks a number setting: true/false is refused, not read as 1/0
Switch = Annotated[bool, BeforeValidator(_switch_text)]
Count = Annotated[int, Number, Field(ge=0)]
Seconds = Annotated[float, Number, Field(ge=0, allow_inf_nan=False)]
MaxNewTokens = Annotated[int, Number, Field(ge=1, le=8192)]


def _bounds(metadata: Sequence[object]) -> tuple[int | float | None, int | float | None]:
    """(lowest, highest) allowed by a field's constraints; None where there is no bound."""
    lo = next((m.ge for m in metadata if isinstance(m, Ge) and isinstance(m.ge, (int, float))), None)
    hi = next((m.le for m in metadata if isinstance(m, Le) and isinstance(m.le, (int, float))), None)
    return lo, hi


def _shown(value: object, quoted: bool = True, limit: int = 40) -> str:
    """A value as it was sent, cut short (a number of thousands of digits cannot even be printed)."""
    try:
        text = repr(value) if quoted else str(value)
    except ValueError:
        text = "a number too long to show"
    return text[:limit]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class GenerationSettings:
    """What a user may change per request in the sidebar (or the API). The limits are the
    fields' constraints; the page's sliders read them as LIMITS."""

    max_new_tokens: MaxNewTokens = 512
    do_sample: bool = False
    temperature: Annotated[float, Number, Field(ge=0.01, le=2.0)] = 0.7
    top_p: Annotated[float, Number, Field(ge=0.01, le=1.0)] = 0.95
    top_k: Annotated[int, Number, Field(ge=0, le=1000)] = 50
    repetition_penalty: Annotated[float, Number, Field(ge=0.5, le=2.0)] = 1.0
    seed: Annotated[int, Number, Field(ge=0, le=2**32 - 1)] | None = None  # None: random
    # Only the benchmark sets this: it forces exactly max_new_tokens tokens.
    min_new_tokens: Annotated[int, Number, Field(ge=0, le=8192)] = 0

    # What a user may set (the sidebar, /chat); min_new_tokens is the benchmark's own.
    USER_FIELDS: ClassVar[tuple[str, ...]] = (
        "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
    # name -> (lowest, highest), from the constraints above (set below the class).
    LIMITS: ClassVar[dict[str, tuple[int | float, int | float]]] = {}

    @field_validator("do_sample", mode="before")
    @classmethod
    def _true_or_false(cls, value: object) -> bool:
        # A checkbox sends a bool and a JSON client may send 0/1; the text "false" is refused
        # rather than read as true.
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise PydanticCustomError("bool_type", "Input should be true or false")

    @field_validator("seed", mode="before")
    @classmethod
    def _random_seed(cls, value: object) -> object:
        # The page's Number shows -1 for random; a client may also send "".
        if value == "":
            return None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                if float(value) < 0:
                    return None
            except (ValueError, OverflowError):
                pass  # not a number: pydantic says so
        return value

    @classmethod
    def from_values(cls, **values: object) -> GenerationSettings:
        """Build from loosely typed UI/API values (numbers as text, seed -1 or "" = random,
        None = the default); anything else is refused with a sentence."""
        unknown = sorted(set(values) - set(cls.USER_FIELDS))
        if unknown:
            raise UserInputError(f"Unknown settings: {', '.join(unknown)}; known are "
                                 f"{', '.join(cls.USER_FIELDS)}.")
        try:
            return TypeAdapter(cls).validate_python({k: v for k, v in values.items() if v is not None})
        except ValidationError as e:
            raise UserInputError(cls._sentence(e.errors()[0], values)) from None

    @classmethod
    def _sentence(cls, error: ErrorDetails, values: Mapping[str, object]) -> str:
        name = str(error["loc"][0])
        raw = values[name]
        if name == "do_sample":
            return f"The setting do_sample must be true or false, not {_shown(raw)}."
        if error["type"] in _OUT_OF_RANGE and name in cls.LIMITS:
            lo, hi = cls.LIMITS[name]
            return f"The setting {name} must be between {lo} and {hi}; it was {_shown(raw, quoted=False)}."
        return f"The setting {name} must be a number, not {_shown(raw)}."

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_types(cls: type) -> dict[str, Any]:
    """A class's annotated instance fields (ClassVars left out), with their Annotated extras."""
    hints = get_type_hints(cls, include_extras=True)
    return {name: hint for name, hint in hints.items() if get_origin(hint) is not ClassVar}


def _constraints(hint: object) -> list[object]:
    """The constraints in a type hint: Annotated[int, Field(ge=1)], or inside `... | None`."""
    if get_origin(hint) is Annotated:
        return [m for info in get_args(hint)[1:] if isinstance(info, FieldInfo) for m in info.metadata]
    members: tuple[object, ...] = get_args(hint)
    return [m for member in members for m in _constraints(member)]


def _limits(cls: type) -> dict[str, tuple[int | float, int | float]]:
    limits: dict[str, tuple[int | float, int | float]] = {}
    for name, hint in _field_types(cls).items():
        lo, hi = _bounds(_constraints(hint))
        if lo is not None and hi is not None:
            limits[name] = (lo, hi)
    return limits


GenerationSettings.LIMITS = _limits(GenerationSettings)


class AppSettings(BaseSettings):
    """How the app is started. Each field has a flag (--max-images), an environment variable
    (PHI_DEMO_MAX_IMAGES) and a key in the settings file (max_images or max-images).

    Built from its arguments alone, like any model; `load` and `resolve` add the flags, the
    environment and the settings file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    backend: Literal["local", "openai"] = Field("local", description=(
        "`local` (load the model in this process), or `openai` to use an OpenAI-compatible "
        "chat-completions server (`--base-url`)"))
    base_url: str | None = Field(None, description="the server, e.g. `http://127.0.0.1:8000/v1`")
    api_key: str | None = Field(None, description="bearer token for the server")
    served_model: str | None = Field(None, description="model name the server knows, for text requests",
                                     json_schema_extra={"shown_default": "the server's first"})
    served_vision_model: str | None = Field(None, description=(
        "model name for requests with images (vLLM: the vision LoRA)"),
        json_schema_extra={"shown_default": "`--served-model`"})
    served_speech_model: str | None = Field(None, description=(
        "model name for audio-only requests (vLLM: the speech LoRA)"),
        json_schema_extra={"shown_default": "`--served-model`"})
    model: str = Field(DEFAULT_MODEL, description=(
        f"hub id, a local folder with the same layout, or `{TINY_MODEL}` (a tiny random-weight model "
        "built offline, to try the interface)"))
    revision: str = Field(DEFAULT_REVISION, description=(
        "hub revision, for hub ids only (the native-transformers weights; `main` still holds the old "
        "remote code)"))
    device: str = Field("auto", description=(
        "`auto` (CUDA if present, else Apple's `mps`, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`; "
        "a device that is not there is refused (nothing is loaded in its place). `mps` is untested on a "
        "Mac: only the choice is unit-tested"))
    dtype: Dtype = Field("auto", description=(
        "`auto` (bf16 on CUDA, fp16 where bf16 is unsupported; bf16 on the CPU for the real model, fp32 "
        "for the tiny one), `bfloat16`, `float16` or `float32`"))
    attn: Attention = Field("auto", description=(
        "attention implementation: `auto` (flash_attention_2 when installed on CUDA, else sdpa), `eager`, "
        "`sdpa` or `flash_attention_2` (refused, not replaced, where it cannot run)"))
    host: str | None = Field(None, description="bind address", json_schema_extra={
        "shown_default": "`GRADIO_SERVER_NAME`, else `0.0.0.0` on a Space and `127.0.0.1` elsewhere"})
    port: Count | None = Field(None, description="port", json_schema_extra={
        "shown_default": "`GRADIO_SERVER_PORT` or `7860`"})
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="default system prompt")
    max_new_tokens: MaxNewTokens = Field(512, description=(
        "longest answer by default, in new tokens, 1 to 8192 (where the sidebar's slider starts; `ask`, "
        "`transcribe` and `summarize` use it too)"))
    max_images: Count = Field(8, description="most images in one conversation")
    max_audio_clips: Count = Field(4, description=(
        "most audio clips the model hears in one conversation (the oldest are left out past it)"))
    context_budget: Count = Field(0, description=(
        "most prompt tokens in one answer, images and audio counted; past it the oldest messages are left "
        "out with a note. 0: computed at start from free memory and the KV cache's bytes per token; never "
        "more than the model's context minus the answer's room"), json_schema_extra={
        "shown_default": "`0` (computed at start)"})
    max_audio_seconds: Seconds = Field(300.0, description="longest audio clip accepted, in seconds")
    max_video_frames: Count = Field(8, description=(
        "most frames taken from one video (one per 2 s of clip, evenly spaced; they count as images)"))
    max_video_seconds: Seconds = Field(300.0, description="longest video accepted, in seconds")
    max_recording_seconds: Seconds = Field(7200.0, description=(
        "longest recording the Audio file tab and `transcribe`/`summarize` accept, in seconds"))
    summary_part_seconds: Seconds = Field(1800.0, description=(
        "longest audio summarised in one request, in seconds; longer recordings are summarised by parts, "
        "then combined"))
    vad: Literal["silero", "energy"] = Field("silero", description=(
        "voice-activity detector for phrase ends, voice turns and chunking: `silero` (silero-vad; the "
        "energy threshold if it cannot load, said on the page) or `energy`"))
    max_file_size: str = Field("50mb", description="largest upload Gradio accepts")
    chats_dir: str | None = Field(None, description=(
        "where saved chats' media (by content hash) and the browser-state key are kept; "
        "`PHI_DEMO_STATE_SECRET` sets the key instead (e.g. on a Space without persistent storage)"),
        json_schema_extra={"shown_default": "`chats/` in the cache folder"})
    chats_budget: str = Field("2gb", description=(
        "most disk the saved chats' media may take; the least recently used go first"))
    feedback_file: str | None = Field(None, description="JSONL file for 👍/👎 on answers; `off` turns it off",
                                      json_schema_extra={
                                          "shown_default": "`feedback.jsonl` in the cache folder (off on a Space)"})
    quantize: Literal["auto", "none", "int4", "4bit", "8bit"] = Field("auto", description=(
        "`auto`: `int4` on a CPU without room for bf16, or on a CPU-only Space (the sidebar says why), "
        "else none; `none`; `int4`: the CPU path, decoder and LM head in group-wise int4 over torch's own "
        "kernel, token embedding in int8, encoders and LoRA adapters in bf16; `4bit`/`8bit`: bitsandbytes, "
        "for a GPU (decoder only; 5-30x slower than bf16 on a CPU)"))
    int4_cache: str | None = Field(None, description=(
        "folder where `--quantize int4` keeps the quantized weights it made at the first start, so later "
        "starts map them instead of quantizing; `off` turns it off"),
        json_schema_extra={"shown_default": "`int4/` in the cache folder"})
    int4_cache_budget: str = Field("10gb", description=(
        "most disk the int4 cache may take (a full-size entry is about 4.5 GB); the least recently used "
        "entries go first, and an entry larger than this is not written"))
    offload: Switch = Field(False, description=(
        "let accelerate place layers on the GPU until it is full and the rest in CPU memory "
        "(GPUs under 12 GB)"))
    kv_reuse: Switch = Field(True, description=(
        "keep the previous turn's KV cache so a follow-up only prefills what is new"))
    fast_decode: Switch = Field(False, description=(
        "static KV cache + `torch.compile`d decode step (CUDA graphs on a GPU); compiles for a while at "
        "start, best on a GPU"))
    compile_backend: str = Field("inductor", description=(
        "`torch.compile` backend for `--fast-decode`; `eager` only checks that the decode step compiles "
        "as one graph"))
    api: Switch = Field(True, description=(
        "serve the OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`, `/v1/audio/*`) next to "
        "the page; see docs/API.md"))
    server_api_key: str | None = Field(None, description=(
        "key that `/v1/*` requires as `Authorization: Bearer <key>`; without one, anyone who can reach "
        "the port can use the model (the page is not affected)"))
    mcp: Switch = Field(False, description=(
        "serve MCP tools (ask, transcribe, translate_speech, summarize_audio, describe_image, read_pdf) "
        "at `/mcp/` over streamable HTTP; see docs/API.md"))
    share: Switch = Field(False, description="create a public gradio.live link")
    offline: Switch = Field(False, description=(
        "never contact the hub; use the local cache only (`HF_HUB_OFFLINE=1` turns it on too)"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # AppSettings(...) in code and tests means exactly those values; `resolve` names its sources.
        return (init_settings,)

    @property
    def chats_folder(self) -> Path:
        return Path(self.chats_dir).expanduser() if self.chats_dir else cache_root() / "chats"

    @property
    def is_tiny(self) -> bool:
        return self.model == TINY_MODEL

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
        """One flag per field (all, or those named in `only`), plus --config. A flag left out is
        None, so the environment and the file can still set it."""
        for name, field in cls.model_fields.items():
            if only is not None and name not in only:
                continue
            help_ = f"{_plain(field.description or '')} [default {_plain(shown_default(field))}; env {env_name(name)}]"
            help_ = help_.replace("%", "%%")
            if field.annotation is bool:
                p.add_argument(flag_name(name), action=argparse.BooleanOptionalAction, default=None, help=help_)
            else:
                p.add_argument(flag_name(name), default=None, help=help_, choices=_choices(field) or None)
        p.add_argument("--config", default=None,
                       help=f"settings file (.toml or .json) with the same names as the flags [env {ENV_PREFIX}CONFIG]")
        return p

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="app.py", description="Chat with Phi-4-multimodal-instruct in the browser.")
        p.add_argument("--version", action="version", version=f"phi-demo {__version__}")
        return cls.add_arguments(p)

    @classmethod
    def load(cls, argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> AppSettings:
        return cls.resolve(vars(cls.parser().parse_args(argv)), environ)

    @classmethod
    def resolve(cls, flags: Mapping[str, object], environ: Mapping[str, str] | None = None) -> AppSettings:
        """Flags (non-None) win over PHI_DEMO_* variables, which win over the settings file."""
        environ = os.environ if environ is None else environ
        config_path = flags.get("config") or environ.get(f"{ENV_PREFIX}CONFIG")
        sources: list[_Source] = [_Flags(cls, flags), _Environment(cls, environ)]
        if config_path:
            sources.append(_SettingsFile(cls, str(config_path)))
        try:
            # pydantic-settings merges the sources in this order (pyright sees only the fields in __init__).
            s = cls(_build_sources=(tuple(sources), {}))  # pyright: ignore[reportCallIssue]
        except ValidationError as e:
            raise SettingError(cls._sentence(e.errors()[0], sources)) from None
        if environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
            s.offline = True
        # A Space must listen on all interfaces; everywhere else only this machine may connect.
        if s.host is None and not environ.get("GRADIO_SERVER_NAME"):
            s.host = "0.0.0.0" if environ.get("SPACE_ID") else "127.0.0.1"
        return s

    @classmethod
    def _sentence(cls, error: ErrorDetails, sources: Sequence[_Source]) -> str:
        name = str(error["loc"][0])
        where, raw = next(((s.where(name), s()[name]) for s in sources if name in s()), (name, error["input"]))
        return f"{where} = {_shown(raw, limit=60)}: {name} must be {cls._allowed(name, error['type'])}."

    @classmethod
    def _allowed(cls, name: str, error_type: str) -> str:
        field = cls.model_fields[name]
        if error_type == "literal_error":
            return "one of " + ", ".join(_choices(field))
        if error_type in ("bool_parsing", "bool_type"):
            return "true or false"
        if error_type == "string_type":
            return "text"
        lo, hi = _bounds(field.metadata)
        if error_type in _OUT_OF_RANGE | {"finite_number"}:
            if lo is not None and hi is not None:
                return f"between {lo} and {hi}"
            return "a finite number, zero or more" if field.annotation is float else "zero or more"
        if error_type in ("int_parsing", "int_from_float"):
            return "a whole number"
        return "a number"


class _Source(PydanticBaseSettingsSource):
    """A settings source that can say where a value came from, for the sentence."""

    def where(self, name: str) -> str:
        raise NotImplementedError


class _Flags(InitSettingsSource, _Source):
    def __init__(self, settings_cls: type[BaseSettings], flags: Mapping[str, object]):
        given = {k: v for k, v in flags.items() if k in settings_cls.model_fields and v is not None}
        super().__init__(settings_cls, given)

    def where(self, name: str) -> str:
        return flag_name(name)


class _Environment(EnvSettingsSource, _Source):
    """PHI_DEMO_* variables from the given mapping (os.environ unless a test hands one in)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Case-blind like pydantic's own, which reads os.environ only.
        return {k.lower(): v for k, v in self._environ.items()}

    def where(self, name: str) -> str:
        return env_name(name)


class _SettingsFile(InitSettingsSource, _Source):
    """A .toml or .json file (pydantic's own file sources pass over a missing file in silence)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str):
        self.path = path
        super().__init__(settings_cls, read_config(path, tuple(settings_cls.model_fields)))

    def where(self, name: str) -> str:
        return f"{name} in {self.path}"


def read_config(path: str, known: tuple[str, ...] | None = None) -> dict[str, object]:
    """A .toml or .json file of settings; keys may use dashes or underscores."""
    try:
        with open(path, "rb") as fh:
            data: object = tomllib.load(fh) if str(path).endswith(".toml") else json.load(fh)
    except OSError as e:
        raise SettingError(f"Cannot read the settings file {path}: {e.strerror}.") from None
    except ValueError as e:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise SettingError(f"The settings file {path} is not valid: {e}") from None
    if not isinstance(data, dict):
        raise SettingError(f"The settings file {path} must hold a table of settings.")
    table = cast("dict[object, object]", data)  # json and toml give untyped tables
    clean = {str(k).replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(set(clean) - set(known or AppSettings.model_fields))
    if unknown:
        raise SettingError(f"The settings file {path} has unknown settings: {', '.join(unknown)}.")
    return clean


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _choices(field: FieldInfo) -> tuple[str, ...]:
    if get_origin(field.annotation) is not Literal:
        return ()
    values: tuple[object, ...] = get_args(field.annotation)
    return tuple(str(v) for v in values)


def _plain(text: str) -> str:
    """Markdown to terminal text (--help)."""
    return text.replace("`", "")


def shown_default(field: FieldInfo) -> str:
    """The default as a person reads it, in markdown: a value, on/off, or what happens when unset."""
    extra = field.json_schema_extra
    shown = extra.get("shown_default") if extra is not None and not callable(extra) else None
    if isinstance(shown, str):
        return shown
    value = field.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 300, not 300.0
    return f"`{value}`"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)])


CONFIGURATION_INTRO = """\
# Configuration: flags, environment variables, settings file

<!-- Generated by `python -m phi_demo.settings --markdown > docs/CONFIGURATION.md` from the
fields of AppSettings in phi_demo/settings.py; edit those, not this file. -->

Every setting has a flag, an environment variable and a key in a settings file. A flag wins
over the variable, the variable over the settings file, and the file over the default.
`python app.py --help` lists them; each subcommand of `python -m phi_demo` takes those that
concern it.

"""

CONFIGURATION_OUTRO = """
The settings file is TOML (`.toml`) or JSON (anything else), with the same names as the
flags, with dashes or underscores:

```toml
model = "tiny-random"
max-new-tokens = 256
kv_reuse = false
```

A value that cannot be used (`PHI_DEMO_MAX_IMAGES=lots`, text where the settings file needs
a number, a name the file should not hold) is refused in one line that names the setting,
where the value came from, the value and what is allowed: the CLI and `app.py` exit with
code 2. A setting this machine cannot honour (`--device cuda` without a GPU,
flash-attn where it is not installed) keeps the app up with the reason on the page and in
the log, and loads nothing in its place.

On/off settings take `--flag` / `--no-flag`, and `1`, `true`, `yes`, `on` or `0`, `false`,
`no`, `off` (or empty) in a variable.

Other variables: `PHI_DEMO_CACHE` (the app's cache folder, where the tiny model is built,
default `~/.cache/phi-demo`), `PHI_DEMO_STATE_SECRET` (the key the browser's saved chats are
encrypted with), the hub's own `HF_HOME` / `HF_TOKEN` / `HF_HUB_OFFLINE`, and Gradio's
`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`, `GRADIO_TEMP_DIR`. Uploads older than a day are
deleted from Gradio's cache every hour.
"""


def configuration_markdown() -> str:
    """docs/CONFIGURATION.md: the table of every setting, from the fields themselves."""
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in AppSettings.model_fields.items():
        flag = f"`{flag_name(name)}`"
        if field.annotation is bool:
            flag += f" / `--no-{flag_name(name)[2:]}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| {flag} | `{env_name(name)}` | {shown_default(field)} | {meaning} |")
    rows.append(f"| `--config` | `{ENV_PREFIX}CONFIG` | none | a settings file (see below) |")
    return CONFIGURATION_INTRO + "\n".join(rows) + "\n" + CONFIGURATION_OUTRO


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="python -m phi_demo.settings", description="The settings' documentation.")
    cli.add_argument("--markdown", action="store_true", help="print docs/CONFIGURATION.md")
    if cli.parse_args().markdown:
        sys.stdout.write(configuration_markdown())
