"""Command line: `python -m phi_demo ask ...` and `python -m phi_demo transcribe ...`.

Prints the streamed answer on stdout (stats on stderr); `--json FILE` also writes the prompt,
inputs, answer, settings and timings. Bad input is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from .errors import ModelUnavailable, SettingError, UserInputError
from .settings import AppSettings, GenerationSettings

MODEL_FLAGS = ("model", "revision", "device", "dtype", "attn", "system_prompt", "max_new_tokens",
               "max_images", "max_audio_clips", "max_audio_seconds", "max_video_frames", "max_video_seconds", "offline")
EXIT_BAD_INPUT, EXIT_NO_MODEL, EXIT_FAILED = 2, 3, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m phi_demo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="ask a question about text, images and audio")
    ask.add_argument("question")
    ask.add_argument("--image", action="append", default=[], help="image file or http(s) URL (repeatable)")
    ask.add_argument("--audio", action="append", default=[], help="audio file or http(s) URL (repeatable)")
    ask.add_argument("--video", action="append", default=[],
                     help="video file or http(s) URL (repeatable): evenly spaced frames and its sound")
    ask.add_argument("--pdf", action="append", default=[],
                     help="PDF file or http(s) URL (repeatable): its pages, or those the question names "
                          "(\"pages 2-3\")")

    tr = sub.add_parser("transcribe", help="transcribe (or translate) speech")
    tr.add_argument("audio", help="audio file or http(s) URL")
    tr.add_argument("--language", default="auto", help="en, zh, de, fr, it, ja, es, pt or auto")
    tr.add_argument("--task", default="transcribe", choices=("transcribe", "translate"),
                    help="transcribe in the spoken language, or translate to English")

    for sp in (ask, tr):
        AppSettings.add_arguments(sp, only=MODEL_FLAGS)
        sp.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
        sp.add_argument("--temperature", type=float, default=None)
        sp.add_argument("--top-p", type=float, default=None)
        sp.add_argument("--top-k", type=int, default=None)
        sp.add_argument("--seed", type=int, default=None)
        sp.add_argument("--json", metavar="FILE", help="also write prompt, inputs, answer, settings and timings here")
        sp.add_argument("--allow-private-urls", action="store_true",
                        help="allow URLs on loopback/private addresses (refused by default)")
        sp.add_argument("--quiet", action="store_true", help="no stats on stderr")
    return p


def _local(path_or_url: str, allow_private: bool) -> str:
    from .fetch import fetch, is_url
    from .settings import cache_root

    if is_url(path_or_url):
        return str(fetch(path_or_url, cache_root() / "downloads", allow_private=allow_private))
    if not Path(path_or_url).is_file():
        raise UserInputError(f"{path_or_url}: no such file.")
    return path_or_url


def run(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    from .conversation import Limits, Turn, build_request
    from .transcription import instruction

    settings = AppSettings.resolve(vars(args))
    gen = GenerationSettings.from_values(max_new_tokens=settings.max_new_tokens, do_sample=args.sample,
                                         temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                         seed=args.seed)
    if args.command == "ask":
        question = args.question
        files = [_local(f, args.allow_private_urls) for f in args.image + args.audio + args.video + args.pdf]
        system_prompt = settings.system_prompt
    else:
        question = instruction(args.language, args.task)
        files = [_local(args.audio, args.allow_private_urls)]
        system_prompt = ""
    limits = Limits.from_settings(settings)
    turn = Turn("user", question.strip(), tuple(files))
    if not turn.text and not turn.files:
        raise UserInputError("The question is empty.")
    request = build_request([turn], system_prompt, limits)

    from transformers.utils import logging as hf_logging

    from .contract import collect
    from .engine import Engine

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    engine = Engine(settings)
    if engine.config_error:
        raise SettingError(engine.config_error)
    loaded = engine.load()
    load_s = time.perf_counter() - t0

    def show(piece: str) -> None:
        out.write(piece)
        out.flush()

    answer, stats = collect(engine.stream(request, gen, threading.Event()), on_text=show)
    out.write("\n")
    if stats and not args.quiet:
        err.write(f"[{stats.summary()} · model load {load_s:.2f} s]\n")
    if args.json:
        record = {
            "command": args.command, "prompt": request.prompt,
            "inputs": {"text": question, "files": list(args.image + args.audio + args.video + args.pdf) if args.command == "ask" else [args.audio],
                       "local_files": files},
            "answer": answer,
            "settings": {"model": settings.model, "revision": engine.key().revision, "device": loaded.device,
                         "dtype": loaded.dtype, "attention": loaded.attn, "adapter": engine.adapter_for(loaded, request.modality),
                         "generation": gen.as_dict()},
            "timings": {"model_load_s": round(load_s, 3), "ttft_s": round(stats.ttft_s, 4), "total_s": round(stats.total_s, 4),
                        "decode_tok_s": round(stats.decode_tok_s, 2), "new_tokens": stats.new_tokens,
                        "prompt_tokens": stats.prompt_tokens} if stats else None,
        }
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UserInputError, SettingError) as e:
        print(f"phi-demo: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelUnavailable as e:
        print(f"phi-demo: {e}", file=sys.stderr)
        return EXIT_NO_MODEL
    except KeyboardInterrupt:
        print("phi-demo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(f"phi-demo: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
