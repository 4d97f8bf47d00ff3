"""Which weights fit this machine: `--quantize auto` picks int4 on a CPU that cannot hold
bf16 (or on a CPU-only Hugging Face Space), and says why."""

from __future__ import annotations

import os
from pathlib import Path

# The real checkpoint: 5.57 B parameters in bf16 plus the two LoRA adapters, as resident
# after loading (measured with full-size random weights: 13.3 GB).
HUB_BF16_BYTES = 13.3e9
# Room for activations, the KV cache, the processor and Python itself.
WORKING_BYTES = 1.5e9


def bf16_bytes_needed(folder: str | os.PathLike | None) -> float:
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


def choose_quantize(spec: str, device: str, tiny: bool, on_space: bool, need: float,
                    available: float | None) -> tuple[str, str]:
    """(kind, why) for --quantize `spec`; `why` is empty unless `auto` chose something."""
    if spec != "auto":
        return spec, ""
    if tiny or device != "cpu":
        return "none", ""
    if on_space:
        return "int4", f"int4 on this CPU-only Space (bf16 needs {need / 1e9:.1f} GB and decodes ~3x slower)"
    if available is not None and available < need:
        return "int4", (f"int4 to fit this machine: bf16 needs {need / 1e9:.1f} GB, "
                        f"{available / 1e9:.1f} GB is available")
    return "none", ""
