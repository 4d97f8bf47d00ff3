"""The benchmark itself runs end to end (a smoke run: its numbers are not checked here,
only that every section reports and the summary line is there), as `python -m phi_demo_dev.bench`
runs: a process of its own that starts servers and loads models."""

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_quick_bench_reports_every_section(tmp_path):
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [sys.executable, "-m", "phi_demo_dev.bench", "--quick", "--attn", "sdpa", "--runs", "1", "--new-tokens", "8",
         "--sections", "prefill,reuse,voice,soak,live,file,fair,fast,api", "--live-minutes", "0.5", "--file-minutes", "0.5",
         "--compile-backend", "eager", "--voice-turns", "6", "--max-clips", "2", "--soak-turns", "6",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    for row in ("| raw model.generate |", "| engine stream (thread + streamer) |", "| Gradio server via gradio_client |",
                "| image 448x448 |", "| audio 30 s |", "| video 16 s 720p: 8 frames + 10 s sound |",
                "| PDF 3 A4 pages (scans, no text layer) |", "Turn 5 TTFT / turn 1 TTFT", "Real-time factor",
                "| finding pauses (silero-vad) |", "File view real-time factor",
                "| between the answer's tokens |", "| after the answer (waiting) |",
                "| engine stream, fast decode |", "| raw model.generate, static cache (1024) + torch.compile |",
                "| /v1/chat/completions (openai client, SSE) |", "The endpoint adds",
                "Peak memory: CPU RSS", "### A spoken session past the clip limit (6 turns, 2 clips kept)",
                "(dropped now) |", "### Soak: one chat of 6 mixed turns", "6 of 6 turns answered, 0 refused"):
        assert row in report, row
    assert re.search(r"voice KV reuse: median \d+% of prompt tokens cached", proc.stdout)
    assert "soak: 6 of 6 turns answered, 0 refused, resident memory" in proc.stdout
    assert re.search(r"stream/raw tok/s ratio: \d+\.\d\d \(tiny-random, cpu, sdpa\); server/raw end-to-end: \d+\.\d\d",
                     proc.stdout)


def test_summary_names_the_attention_asked_for():
    """With two implementations measured, the summary is the first one's, not the last's."""
    proc = subprocess.run(
        [sys.executable, "-m", "phi_demo_dev.bench", "--quick", "--attn", "sdpa,eager", "--runs", "1", "--new-tokens", "4",
         "--sections", "", "--no-server"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### Attention: sdpa" in proc.stdout and "### Attention: eager" in proc.stdout
    assert re.search(r"stream/raw tok/s ratio: \d+\.\d\d \(tiny-random, cpu, sdpa\)\s*$", proc.stdout), proc.stdout[-500:]


def test_quant_section_ends_with_its_summary_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "phi_demo_dev.bench", "--model", "tiny-random", "--sections", "quant", "--new-tokens", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| bf16 |", "| int4 |", "| image 1344 |", "| audio 30 s |", "| video clip (example) |", "| PDF (example) |",
                "| int4 | image 448 (example) |"):
        assert row in proc.stdout, row
    assert "stream/raw" not in proc.stdout  # the quant section alone
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"int4/bf16 decode ratio: \d+\.\d\d \(tiny-random, cpu\); image prefill ratio \d+\.\d\d; "
                        r"resident int4 \d+\.\d GB, bf16 \d+\.\d GB; peak load int4 \d+\.\d GB", last), last
