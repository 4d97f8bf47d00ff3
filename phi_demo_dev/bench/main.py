"""The command line: which model, which sections, one report and one summary line."""

from __future__ import annotations

import argparse
import resource
import sys
import time

from phi_demo_dev.bench.api import api_rows
from phi_demo_dev.bench.common import (
    BENCH_QUESTION,
    BENCH_SYSTEM,
    FULL_RANDOM,
    ForcedLength,
    engine_stream,
    interleaved_medians,
    launch_app,
    machine,
    raw_generate,
    versions,
)
from phi_demo_dev.bench.fair import fair_rows
from phi_demo_dev.bench.fair import report as fair_report
from phi_demo_dev.bench.fast import fast_rows, gpu_bandwidth
from phi_demo_dev.bench.live import live_rows
from phi_demo_dev.bench.long import soak_report, voice_report, voice_rows
from phi_demo_dev.bench.prefill import prefill_rows
from phi_demo_dev.bench.quant import checkpoint_for, quant_rows
from phi_demo_dev.bench.quant import worker as quant_worker
from phi_demo_dev.bench.recording import recording_rows
from phi_demo_dev.bench.recording import report as recording_report
from phi_demo_dev.bench.reuse import reuse_rows
from phi_demo_dev.bench.server import RemoteClient, client_loop, server_stream

SECTIONS = ("prefill", "reuse", "voice", "soak", "live", "file", "fair", "fast", "quant", "api")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, few runs: under a minute")
    p.add_argument("--model", default="tiny-random", help=f"tiny-random, {FULL_RANDOM}, a folder or a hub id")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--attn", default="all", help="implementations (comma-separated), or 'all' that can run here")
    p.add_argument("--runs", type=int, default=None, help="runs per measurement (median)")
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--turns", type=int, default=5, help="chat turns for the KV-reuse measurement")
    p.add_argument("--voice-turns", type=int, default=20, help="spoken turns for the voice section")
    p.add_argument("--max-clips", type=int, default=4, help="clips a voice chat keeps (the app's --max-audio-clips)")
    p.add_argument("--soak-turns", type=int, default=None, help="turns of the soak section's chat (default 100; --quick 20)")
    p.add_argument("--no-server", action="store_true", help="skip the Gradio server path")
    p.add_argument("--sections", default=None,
                   help="measurements besides the three paths: prefill, reuse, voice, soak, live, file, fair, fast, api "
                        "(comma-separated; '' for none; default all, --quick: all but fast and soak)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend for the fast section")
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="GPU memory bandwidth in GB/s for the decode ceiling (default: known GPUs by name)")
    p.add_argument("--live-minutes", type=float, default=None, help="length of the live-transcription stream")
    p.add_argument("--file-minutes", type=float, default=None, help="length of the Audio file view's recording")
    p.add_argument("--out", default=None, help="append the report (markdown) to this file")
    p.add_argument("--checkpoint", default=None,
                   help="quant section: the checkpoint folder to load (default: one written for --model in the cache)")
    p.add_argument("--quant-variants", default="none,int4",
                   help="quant section: weights to compare with bf16 (none = bf16; int4, 4bit, 8bit)")
    p.add_argument("--client-for", default=None, help=argparse.SUPPRESS)  # the client process (RemoteClient)
    p.add_argument("--quant-worker", default=None, help=argparse.SUPPRESS)  # one variant of the quant section
    p.add_argument("--quantize", default="none", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client_for:
        return client_loop(args.client_for)
    if args.quant_worker:
        return quant_worker(args.quant_worker, args.quantize, args.new_tokens or 32, args.worker_out)
    runs = args.runs or (3 if args.quick else 5)
    if args.sections is None:
        args.sections = ("prefill,reuse,voice,live,file,fair,api" if args.quick
                         else "prefill,reuse,voice,soak,live,file,fair,fast,api")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sorted(sections - set(SECTIONS))
    if unknown:  # never measure for minutes what was not asked for
        p.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    n = args.new_tokens or (64 if args.quick else 256)

    import torch

    from phi_demo.engine.cache import ModelCache
    from phi_demo.engine.local import Engine
    from phi_demo.engine.runtime import Machine, attention_for, attention_options, device_for, dtype_for
    from phi_demo.settings import AppSettings
    from phi_demo_dev.bench.full_random import build_full_random

    here = Machine.detect(args.model)
    device = device_for(args.device, here)[0]
    dtype = dtype_for(args.dtype, device, args.model == "tiny-random", here)[0]
    if args.attn == "all":
        names = [o.name for o in attention_options(device, here) if o.available]
        asked = attention_for("auto", device, here)  # what the app itself would use
    else:
        try:
            names = [attention_for(a.strip(), device, here) for a in args.attn.split(",")]
        except ValueError as e:
            p.error(str(e))
        asked = names[0]
    report = [f"## {args.model} on {device} ({dtype})", "",
              f"Machine: {machine()}; {versions()}.  ",
              f"Command: `python -m phi_demo_dev.bench {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
              f"Runs: median of {runs}; {n} new tokens forced (EOS ignored); date {time.strftime('%Y-%m-%d')}."
              if sections != {"quant"} else f"Date {time.strftime('%Y-%m-%d')}.", ""]
    summary = None
    quant_summary = ""
    extra_summaries: list[str] = []
    if "quant" in sections:
        folder = args.checkpoint or checkpoint_for(args.model)
        variants = [v.strip() for v in args.quant_variants.split(",") if v.strip()]
        if "none" not in variants:
            variants.insert(0, "none")
        lines, quant_summary = quant_rows(folder, variants, args.new_tokens or 32, f"{args.model}, cpu")
        report += [f"### Weights: bf16 and {', '.join(v for v in variants if v != 'none')} (loaded from {folder}, "
                   f"CPU, sdpa, {args.new_tokens or 32} new tokens for decode)", ""] + lines + [""]
    if sections == {"quant"}:
        names = []  # the quant section alone: no three-path comparison
    for attn in names:
        settings = AppSettings(model=args.model, device=device, dtype=dtype, attn=attn, host="127.0.0.1",
                               compile_backend=args.compile_backend)
        if args.model == FULL_RANDOM:
            built = build_full_random(device, dtype, attn)
            engine = Engine(settings, cache=ModelCache(lambda key, b=built: b))
        else:
            engine = Engine(settings)
        t0 = time.perf_counter()
        loaded = engine.load()
        load_s = loaded.load_seconds if args.model == FULL_RANDOM else time.perf_counter() - t0
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

        from phi_demo.chat.messages import Turn
        from phi_demo.chat.request import build_request

        request = build_request([Turn("user", BENCH_QUESTION)], BENCH_SYSTEM)
        engine.activate_adapter(loaded, "text")
        # Warm-up: first calls pay for lazy initialisation (kernels, allocator).
        raw_generate(loaded, request, min(n, 8))
        engine_stream(engine, request, min(n, 8))
        paths = {"raw model.generate": lambda loaded=loaded, request=request: raw_generate(loaded, request, n),
                 "engine stream (thread + streamer)": lambda engine=engine, request=request: engine_stream(
                     engine, request, n)}
        if not args.no_server:
            demo = launch_app(settings, ForcedLength(engine))
            client = RemoteClient(demo.local_url)
            server_stream(client, engine, min(n, 8))
            paths["Gradio server via gradio_client"] = lambda client=client, engine=engine: server_stream(
                client, engine, n)
        results = interleaved_medians(paths, runs)
        if not args.no_server:
            client.close()
            demo.close()
        rows = [(name, *r) for name, r in results.items()]
        raw, ours = results["raw model.generate"], results["engine stream (thread + streamer)"]
        srv = results.get("Gradio server via gradio_client")
        report += [f"### Attention: {attn} (load {load_s:.2f} s)", "",
                   "| path | time to first token (s) | decode tok/s | ratio | end-to-end tok/s | ratio |",
                   "| --- | --- | --- | --- | --- | --- |"]
        for name, ttft, tps, e2e in rows:
            decode = f"{tps:.1f} | {tps / raw[1]:.3f}" if tps == tps else "— | —"  # NaN: not observable
            report.append(f"| {name} | {ttft:.3f} | {decode} | {e2e:.1f} | {e2e / raw[2]:.3f} |")
        report.append("")
        if "prefill" in sections:
            prefill = prefill_rows(engine, loaded, runs)
            report += ["| prefill input | prompt tokens | file decoding (ms) | processor + prefill (ms) |",
                       "| --- | --- | --- | --- |"]
            report += [f"| {name} | {tokens} | {dec:.1f} | {ms:.1f} |" for name, tokens, dec, ms in prefill]
            report.append("")
        if "reuse" in sections:
            reuse = reuse_rows(engine, args.turns, min(n, 32))
            report += ["| chat turn (image in turn 1) | TTFT with KV reuse (s) | TTFT without (s) | cached prompt tokens |",
                       "| --- | --- | --- | --- |"]
            report += [f"| {t} | {a:.3f} | {b:.3f} | {c} |" for t, a, b, c in reuse]
            report.append("")
            report.append(f"Turn {args.turns} TTFT / turn 1 TTFT with reuse: {reuse[-1][1] / reuse[0][1]:.2f} "
                          f"(without: {reuse[-1][2] / reuse[0][2]:.2f}).")
        if "voice" in sections:
            rows = voice_rows(engine, args.voice_turns, args.max_clips, min(n, 16))
            lines, voice_summary = voice_report(rows, args.max_clips, f"{args.model}, {device}, {attn}")
            report += [""] + lines
            extra_summaries.append(voice_summary)
        if "soak" in sections:
            lines, soak_summary = soak_report(engine, args.soak_turns or (20 if args.quick else 100), 16)
            report += lines
            extra_summaries.append(soak_summary)
        if "live" in sections:
            minutes = args.live_minutes or (2.0 if args.quick else 10.0)
            live, rtf, lag = live_rows(engine, minutes)
            report += ["", f"Live transcription of a {minutes:g}-minute stream in 0.5 s chunks:", "",
                       "| part of the stream | compute per recognition (s, median) | window (s, median) | recognitions |",
                       "| --- | --- | --- | --- |"]
            report += [f"| {name} | {dt:.3f} | {w:.1f} | {k} |" for name, dt, w, k in live]
            report += ["", f"Real-time factor {rtf:.3f} (compute / audio); committed text lagged the audio by "
                       f"{lag:.1f} s on average.", ""]
        if "file" in sections:
            report += recording_report(recording_rows(engine, args.file_minutes or (3.0 if args.quick else 10.0)))
        if "api" in sections:
            report += ["### What the OpenAI-compatible endpoint adds", ""] + api_rows(engine, settings, n, runs)
        if "fair" in sections:
            fair_s = 6.0 if args.quick else 12.0
            report += fair_report(fair_rows(engine, fair_s), fair_s)
        if "fast" in sections:
            bandwidth = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else (
                gpu_bandwidth(torch.cuda.get_device_name(0)) if device.startswith("cuda") else None)
            report += fast_rows(engine, loaded, request, n, runs, device, bandwidth)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mem = f"Peak memory: CPU RSS {peak_rss:.0f} MB"
        if device.startswith("cuda"):
            mem += f", CUDA {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        report += ["", mem + ".", ""]
        ratio = ours[1] / raw[1]
        line = f"stream/raw tok/s ratio: {ratio:.2f} ({args.model}, {device}, {attn})"
        if not args.no_server:
            line += f"; server/raw end-to-end: {srv[2] / raw[2]:.2f}"
        if attn == asked:  # the summary names the attention asked for, not the last one measured
            summary = line
        engine.cache.release()
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    for line in (summary, quant_summary, *extra_summaries):
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
