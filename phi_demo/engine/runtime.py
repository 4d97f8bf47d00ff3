"""Where and how the model runs: device, dtype, attention and quantization, decided once from
the settings and the machine's facts, each choice with its reason.

`resolve` is pure: the facts it needs (a GPU? bf16 on it? flash-attn installed? memory free?
a Space?) come in a `Machine`, which `Machine.detect` reads from this machine; tests pass
their own. A setting that cannot be honoured raises with one sentence saying why, and nothing
is put in its place."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from phi_demo.contract import AttentionOption
from phi_demo.engine import sources, zerogpu
from phi_demo.errors import ModelUnavailable
from phi_demo.settings import TINY_MODEL, AppSettings

# The real checkpoint: 5.57 B parameters in bf16 plus the two LoRA adapters, as resident
# after loading (measured with full-size random weights: 13.3 GB).
HUB_BF16_BYTES = 13.3e9
# Room for activations, the KV cache, the processor and Python itself.
WORKING_BYTES = 1.5e9
INT4_IS_CPU = "--quantize int4 is the CPU path; on a GPU use --quantize 4bit (bitsandbytes)."


@dataclass(frozen=True)
class Machine:
    """What this machine offers the model (the only input to `resolve` besides the settings)."""

    cuda: bool = False
    cuda_bf16: bool = False  # the CUDA GPU computes in bfloat16
    mps: bool = False  # Apple's Metal device
    flash_attn: bool = False  # the flash-attn package is installed
    zerogpu: bool = False  # a ZeroGPU Space: CUDA is emulated until a request runs
    on_space: bool = False  # a Hugging Face Space
    available_bytes: float | None = None  # memory the system can give without swapping
    model_bf16_bytes: float = HUB_BF16_BYTES + WORKING_BYTES  # what the model takes resident in bf16

    @classmethod
    def detect(cls, model: str | None = None) -> Machine:
        """This machine, for `model` (a hub id, a folder or the tiny model)."""
        cuda = torch.cuda.is_available()
        mps = getattr(torch.backends, "mps", None)
        folder = model if model and sources.is_local_model(model) else None
        return cls(
            cuda=cuda,
            cuda_bf16=cuda and not zerogpu.enabled() and torch.cuda.is_bf16_supported(),
            mps=bool(mps and mps.is_available()),
            flash_attn=importlib.util.find_spec("flash_attn") is not None,
            zerogpu=zerogpu.enabled(),
            on_space=bool(os.environ.get("SPACE_ID")),
            available_bytes=available_bytes(),
            model_bf16_bytes=bf16_bytes_needed(folder),
        )


@dataclass(frozen=True)
class Runtime:
    device: str
    dtype: str
    attn: str
    quantize: str
    reasons: tuple[str, ...] = ()  # one sentence per choice: what was chosen and why
    quantize_reason: str = ""  # why `--quantize auto` chose int4 (the sidebar says it); else empty

    def with_attention(self, attn: str) -> Runtime:
        return dataclasses.replace(self, attn=attn)


def resolve(settings: AppSettings, machine: Machine) -> Runtime:
    """The runtime for `settings` on `machine`; raises ModelUnavailable (device) or ValueError
    (attention, quantization) with the reason for a setting that cannot be honoured."""
    tiny = settings.model == TINY_MODEL
    device, why_device = device_for(settings.device, machine)
    dtype, why_dtype = dtype_for(settings.dtype, device, tiny, machine)
    attn, why_attn = attention_choice(settings.attn, device, machine)
    quantize, why_quantize = quantize_for(settings.quantize, device, tiny, machine)
    reasons = [why_device, why_dtype, why_attn, why_quantize]
    if quantize == "int4":
        if device != "cpu" or settings.offload:
            raise ValueError(INT4_IS_CPU)
        if dtype == "float16":
            dtype = "bfloat16"
            reasons.append("dtype bfloat16 instead of float16: int4's kernel computes in bfloat16 or float32")
    return Runtime(device, dtype, attn, quantize, tuple(reasons),
                   why_quantize if settings.quantize == "auto" and quantize != "none" else "")


def device_for(spec: str, machine: Machine) -> tuple[str, str]:
    """auto: CUDA, else Apple's mps, else the CPU. An explicit device that is not there is refused."""
    if spec == "auto":
        if machine.cuda:
            return "cuda", "device cuda: a CUDA GPU is visible"
        if machine.mps:
            return "mps", "device mps: Apple's mps is available"
        return "cpu", "device cpu: no GPU is visible"
    if spec.startswith("cuda") and not machine.cuda:
        raise ModelUnavailable("A CUDA device was asked for, but no CUDA GPU is visible. Use --device cpu.")
    if spec == "mps" and not machine.mps:
        raise ModelUnavailable("The mps device (Apple Silicon) was asked for, but torch reports it unavailable. "
                               "Use --device cpu.")
    if spec != "cpu" and not spec.startswith(("cuda", "mps")):
        raise ModelUnavailable(f"Unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps.")
    return spec, f"device {spec}: as asked"


def dtype_for(spec: str, device: str, tiny: bool, machine: Machine) -> tuple[str, str]:
    if spec != "auto":
        return spec, f"dtype {spec}: as asked"
    if machine.zerogpu:
        return "bfloat16", "dtype bfloat16: ZeroGPU's cards (A100/H200) all have it"
    if device.startswith("cuda"):
        if machine.cuda_bf16:
            return "bfloat16", "dtype bfloat16: the GPU supports it"
        return "float16", "dtype float16: the GPU lacks bfloat16"
    if device == "mps":
        if tiny:
            return "float32", "dtype float32: the tiny model"
        return "float16", "dtype float16: bfloat16 on mps needs macOS 14; float16 runs everywhere"
    if tiny:
        return "float32", "dtype float32: the tiny model is happiest in it"
    return "bfloat16", "dtype bfloat16: the model in float32 would need ~22 GB of memory"


def attention_options(device: str, machine: Machine) -> list[AttentionOption]:
    """Which attention implementations can run on `device`, and why not when one cannot."""
    if not device.startswith("cuda"):
        flash = AttentionOption("flash_attention_2", False, "needs a CUDA GPU")
    elif not machine.flash_attn:
        flash = AttentionOption("flash_attention_2", False, "flash-attn is not installed (pip install flash-attn)")
    else:
        flash = AttentionOption("flash_attention_2", True)
    return [AttentionOption("eager", True), AttentionOption("sdpa", True), flash]


def attention_choice(spec: str, device: str, machine: Machine) -> tuple[str, str]:
    """'auto' -> the fastest that runs here; an explicit choice that cannot run is refused."""
    options = {o.name: o for o in attention_options(device, machine)}
    if spec == "auto":
        flash = options["flash_attention_2"]
        if flash.available:
            return "flash_attention_2", "attention flash_attention_2: installed, on a CUDA GPU"
        return "sdpa", f"attention sdpa: flash_attention_2 {flash.reason}"
    if spec not in options:
        raise ValueError(f"Unknown attention implementation {spec!r}; choose one of {', '.join(options)}.")
    if not options[spec].available:
        raise ValueError(f"{spec} cannot be used here: {options[spec].reason}.")
    return spec, f"attention {spec}: as asked"


def attention_for(spec: str, device: str, machine: Machine) -> str:
    return attention_choice(spec, device, machine)[0]


def quantize_for(spec: str, device: str, tiny: bool, machine: Machine) -> tuple[str, str]:
    """`--quantize auto` picks int4 on a CPU that cannot hold bf16, or on a CPU-only Space."""
    if spec != "auto":
        return spec, f"quantize {spec}: as asked"
    need = machine.model_bf16_bytes
    if tiny or device != "cpu":
        return "none", "quantize none: " + ("the tiny model" if tiny else "on a GPU, bf16 (or 4bit when asked)")
    if machine.on_space:
        return "int4", f"int4 on this CPU-only Space (bf16 needs {need / 1e9:.1f} GB and decodes ~3x slower)"
    available = machine.available_bytes
    if available is not None and available < need:
        return "int4", (f"int4 to fit this machine: bf16 needs {need / 1e9:.1f} GB, "
                        f"{available / 1e9:.1f} GB is available")
    return "none", "quantize none: bf16 fits in the memory available"


def bf16_bytes_needed(folder: str | os.PathLike[str] | None) -> float:
    """What the model takes resident in bf16: its safetensors (and adapters) if it is on disk."""
    if folder is None or not Path(folder).is_dir():
        return HUB_BF16_BYTES + WORKING_BYTES
    total = sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))
    return (total or HUB_BF16_BYTES) + WORKING_BYTES


def available_bytes() -> float | None:
    """Memory the system can give without swapping (Linux MemAvailable; else all of it)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
