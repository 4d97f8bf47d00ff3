"""Speed, measured side by side in one run: raw `model.generate` vs our streaming engine vs a
full request through the running Gradio server, plus prefill costs, KV reuse across chat
turns, each attention implementation, and peak memory.

    python -m phi_demo_dev.bench --quick                       # tiny model, under a minute
    python -m phi_demo_dev.bench --model full-random --device cuda --dtype bfloat16

Ends with one line: `stream/raw tok/s ratio: R (model, device, attention)`."""

from __future__ import annotations

from phi_demo_dev.bench.main import main

__all__ = ["main"]
