"""Command line: `python -m phi_demo ask|transcribe|summarize|doctor ...`.

`ask` prints the streamed answer on stdout (stats on stderr); `--json FILE` also writes the
prompt, inputs, answer, settings and timings. `transcribe` cuts a recording at pauses into
chunks of at most 30 s and prints txt, srt, vtt or json on stdout; `summarize` prints a
summary; `doctor` asks the loaded model about the bundled examples and prints a table of
checks (exit 1 if one fails). Long files show progress on stderr. Bad input is one line on
stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from phi_demo import __version__, doctor
from phi_demo.chat.messages import Turn
from phi_demo.chat.request import Limits, build_request
from phi_demo.contract import collect
from phi_demo.errors import ModelUnavailable, SettingError, UserInputError
from phi_demo.media.fetch import fetch, is_url
from phi_demo.settings import AppSettings, GenerationSettings, cache_root, flag_name
from phi_demo.speech import longaudio
from phi_demo.speech.live import engine_asker, engine_recognizer
from phi_demo.speech.tasks import instruction
from phi_demo.speech.vad import EnergyVAD, SileroVAD, load_vad

if TYPE_CHECKING:
    from phi_demo.engine.loader import LoadedModel
    from phi_demo.engine.local import Engine

MODEL_FLAGS = ("model", "revision", "device", "dtype", "attn", "system_prompt", "max_new_tokens",
               "max_images", "max_audio_clips", "max_audio_seconds", "max_video_frames", "max_video_seconds", "offline",
               "quantize")
SPEECH_FLAGS = ("model", "revision", "device", "dtype", "attn", "offline", "quantize", "max_recording_seconds",
                "summary_part_seconds", "vad")
EXIT_BAD_INPUT, EXIT_NO_MODEL, EXIT_FAILED = 2, 3, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m phi_demo", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"phi-demo {__version__}")
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

    tr = sub.add_parser("transcribe", help="transcribe (or translate) speech of any length, cut at pauses")
    tr.add_argument("audio", help="audio file or http(s) URL")
    tr.add_argument("--language", default="auto", help="spoken language: en, zh, de, fr, it, ja, es, pt or auto")
    tr.add_argument("--task", default="transcribe", choices=("transcribe", "translate"),
                    help="transcribe in the spoken language, or translate (see --to)")
    tr.add_argument("--to", default="en", help="language to translate into: en, zh, de, fr, it, ja, es or pt")
    tr.add_argument("--format", default="txt", choices=("txt", "srt", "vtt", "json"), help="what stdout gets")
    tr.add_argument("--max-chunk-seconds", type=float, default=30.0,
                    help="longest chunk sent to the model (the model transcribes best up to ~40 s)")

    sm = sub.add_parser("summarize", help="summarize a recording (by parts when longer than one request)")
    sm.add_argument("audio", help="audio file or http(s) URL")

    ask.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    # Converted and checked by GenerationSettings, as the page's and /chat's values are.
    for name in ("temperature", "top_p", "top_k", "seed"):
        lo, hi = GenerationSettings.LIMITS[name]
        ask.add_argument(flag_name(name), default=None, help=f"with --sample: {lo} to {hi}")
    for sp in (ask, tr, sm):  # speech work is greedy: the model card's prompts, no sampling
        AppSettings.add_arguments(sp, only=MODEL_FLAGS if sp is ask else SPEECH_FLAGS + ("max_new_tokens",))
        sp.add_argument("--json", metavar="FILE", help="also write prompt, inputs, results, settings and timings here")
        sp.add_argument("--allow-private-urls", action="store_true",
                        help="allow URLs on loopback/private addresses (refused by default)")
        sp.add_argument("--quiet", action="store_true", help="no progress or stats on stderr")

    dr = sub.add_parser("doctor", help="check the model on this machine against the bundled examples (run it first)")
    # --max-new-tokens is the doctor's own bound, not the app's default answer length
    # (PHI_DEMO_MAX_NEW_TOKENS), so the checks mean the same on every machine.
    AppSettings.add_arguments(dr, only=tuple(f for f in MODEL_FLAGS if f != "max_new_tokens"))
    dr.add_argument("--max-new-tokens", default=None,
                    help="an answer that reaches this many new tokens did not stop by itself (default 256)")
    dr.add_argument("--json", metavar="FILE", help="also write the table, answers, settings and timings here")
    dr.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _local(path_or_url: str, allow_private: bool) -> str:
    if is_url(path_or_url):
        return str(fetch(path_or_url, cache_root() / "downloads", allow_private=allow_private))
    if not Path(path_or_url).is_file():
        raise UserInputError(f"{path_or_url}: no such file.")
    return path_or_url


def _engine(settings: AppSettings) -> tuple[Engine, LoadedModel, float]:
    """(engine, loaded model, load seconds); a setting that cannot be honoured is one line."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - transformers loads only with a model

    from phi_demo.engine.local import Engine  # noqa: PLC0415 - the engine (and torch) loads only when a local model is used

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    engine = Engine(settings)
    if engine.config_error:
        raise SettingError(engine.config_error)
    loaded = cast("LoadedModel", engine.load())  # Engine.load does not say what it returns
    return engine, loaded, time.perf_counter() - t0


def run_speech(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """transcribe and summarize: the long-recording path the Audio file tab uses."""

    # The streams are looked up per call, not bound at import, so a caller that swaps them
    # (a test's capture, an embedding program) gets the output.
    out: TextIO = stdout or sys.stdout
    err: TextIO = stderr or sys.stderr
    settings = AppSettings.resolve(vars(args))
    if args.command == "transcribe":
        prompt = instruction(args.language, args.task, args.to)  # a bad language fails before any work
    path = _local(args.audio, args.allow_private_urls)
    audio, note = longaudio.load_recording(path, settings.max_recording_seconds)
    if note:
        err.write(f"phi-demo: {note}\n")
    vad, vad_name = load_vad(settings.vad)
    speech = cast("EnergyVAD | SileroVAD", vad).segments(audio)  # load_vad does not say what it returns
    total_s = len(audio) / longaudio.SAMPLE_RATE
    engine, loaded, load_s = _engine(settings)
    cancel = threading.Event()
    if args.command == "summarize":
        def part(i: int, n: int) -> None:
            if not args.quiet and n > 1:
                err.write(f"[{'combining the parts' if i == n else f'part {i + 1} of {n}'}]\n")

        ask = engine_asker(engine, settings.max_new_tokens)
        summary = longaudio.summarize(audio, speech, ask, cancel, settings.summary_part_seconds, part)
        out.write(summary.text + "\n")
        return 0
    recognize = engine_recognizer(engine, args.language, args.task, args.to,
                                  max_new_tokens=min(settings.max_new_tokens, 512))
    last: longaudio.Progress | None = None
    for last in longaudio.transcribe(audio, speech, recognize, cancel, args.max_chunk_seconds, note):
        if not args.quiet and last.chunks_done and not (last.finished or last.stopped):
            err.write(f"[{longaudio.clock(last.done_s)} of {longaudio.clock(total_s)} · chunk {last.chunks_done}/{last.chunks} · "
                      f"{last.seconds:.1f} s]\n")
    if last is None:  # the last step (finished or stopped) always comes
        raise RuntimeError("the transcription reported nothing")
    about = {"file": str(args.audio), "duration_s": round(total_s, 3), "task": args.task,
             "language": args.language, **({"to": args.to} if args.task == "translate" else {}),
             "detector": vad_name}
    out.write(longaudio.render(last.cues, args.format, **about))
    if args.json:
        record = {"command": args.command, "prompt": prompt, "inputs": {"files": [args.audio], "local_files": [path]},
                  "segments": [c.__dict__ for c in last.cues], "detector": vad_name,
                  "settings": {"model": settings.model, "device": loaded.device, "dtype": loaded.dtype,
                               "attention": loaded.attn, "adapter": engine.adapter_for(loaded, "speech")},
                  "timings": {"model_load_s": round(load_s, 3), "transcribe_s": round(last.seconds, 3),
                              "real_time_factor": round(last.seconds / total_s, 4)}}
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False))
    if not args.quiet:
        err.write(f"[{len(last.cues)} segments · {last.seconds:.1f} s for {total_s:.1f} s of audio "
                  f"(real-time factor {last.seconds / total_s:.3f}) · {vad_name} · model load {load_s:.2f} s]\n")
    return 0


def run_doctor(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The bundled examples through the request path: a table on stdout, exit 1 if a check fails."""

    out: TextIO = stdout or sys.stdout
    err: TextIO = stderr or sys.stderr
    # Its --max-new-tokens is the doctor's own bound, not the app's answer length.
    settings = AppSettings.resolve({k: v for k, v in vars(args).items() if k != "max_new_tokens"})
    bound = doctor.DEFAULT_BOUND if args.max_new_tokens is None else args.max_new_tokens
    bound = GenerationSettings.from_values(max_new_tokens=bound).max_new_tokens  # refuses 0 with a sentence
    engine, loaded, load_s = _engine(settings)

    def progress(line: str) -> None:
        if not args.quiet:
            err.write(line + "\n")
            err.flush()

    outcomes = doctor.run_checks(engine, settings.system_prompt, Limits.from_settings(settings), bound,
                                 progress=progress)
    heading = (f"phi-demo doctor · {settings.model} · {loaded.device} · {loaded.dtype} · {loaded.attn} · "
               f"model load {load_s:.2f} s")
    out.write(doctor.render(outcomes, heading))
    passed = all(o.passed for o in outcomes)
    if args.json:
        record = {"command": "doctor", "passed": passed, "tiny": engine.is_tiny,
                  "note": doctor.TINY_NOTE if engine.is_tiny else None,
                  "settings": {"model": settings.model, "revision": engine.key().revision, "device": loaded.device,
                               "dtype": loaded.dtype, "attention": loaded.attn, "quantize": engine.quantize,
                               "system_prompt": settings.system_prompt, "max_new_tokens": bound},
                  "timings": {"model_load_s": round(load_s, 3)},
                  "checks": [o.as_dict() for o in outcomes]}
        Path(args.json).write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return 0 if passed else EXIT_FAILED


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out: TextIO = stdout or sys.stdout
    err: TextIO = stderr or sys.stderr
    if args.command in ("transcribe", "summarize"):
        return run_speech(args, out, err)
    if args.command == "doctor":
        return run_doctor(args, out, err)
    settings = AppSettings.resolve(vars(args))
    gen = GenerationSettings.from_values(max_new_tokens=settings.max_new_tokens, do_sample=args.sample,
                                         temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                         seed=args.seed)
    question = args.question
    files = [_local(f, args.allow_private_urls) for f in args.image + args.audio + args.video + args.pdf]
    limits = Limits.from_settings(settings)
    turn = Turn("user", question.strip(), tuple(files))
    if not turn.text and not turn.files:
        raise UserInputError("The question is empty.")
    request = build_request([turn], settings.system_prompt, limits)

    engine, loaded, load_s = _engine(settings)

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
            "inputs": {"text": question, "files": list(args.image + args.audio + args.video + args.pdf),
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
