"""The real size through the app itself (minutes, ~13 GB of disk): write the full-size random
checkpoint if it is not there, start `app.py --model DIR --quantize int4`, answer /chat
requests, and print times from the process's start and the server's memory.

    python scripts/full_size_check.py [--checkpoint DIR] [--quantize int4|none] [--tokens 16]
    python scripts/full_size_check.py --checkpoint DIR --question-only --int4-cache DIR --cold
    python scripts/full_size_check.py --checkpoint DIR --question-only --int4-cache DIR   # warm

--question-only asks one short text question (no image): the start-up figures. --cold
empties the int4 cache folder first (the first start quantizes and writes it); without it a
filled cache is read. Run it once before measuring, so that the checkpoint sits in the
page cache: a first read from disk measures the disk.

Outside the test suite on purpose: its numbers go into docs/PERFORMANCE.md."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def memory(pid: int) -> tuple[float, float]:
    """(resident GB, peak resident GB) of a process."""
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1e6
    return values["VmRSS"], values["VmHWM"]


class ServerLog(threading.Thread):
    """Drains the server's output (a full pipe would stall it), keeps it in a file, and notes
    when the engine's "int4 model loaded" line arrives."""

    def __init__(self, stream, start: float, path: Path | None):
        super().__init__(daemon=True)
        self.stream, self.t0, self.path = stream, start, path
        self.loaded_at: float | None = None
        self.loaded_line = ""
        self.lines: list[str] = []

    def run(self):
        out = open(self.path, "w") if self.path else None
        try:
            for line in self.stream:
                self.lines.append(line)
                if out:
                    out.write(line)
                    out.flush()
                if self.loaded_at is None and re.search(r"int4 model loaded in", line):
                    self.loaded_at = time.perf_counter() - self.t0
                    self.loaded_line = line.strip().split(": ", 1)[-1]
        finally:
            if out:
                out.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--quantize", default="int4")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--question-only", action="store_true", help="one short text question, no image")
    p.add_argument("--int4-cache", default=None, help="the app's --int4-cache folder (default: the app's own)")
    p.add_argument("--cold", action="store_true", help="empty the --int4-cache folder first")
    p.add_argument("--log", default=None, help="keep the server's output in this file")
    args = p.parse_args()
    if args.cold and not args.int4_cache:
        p.error("--cold needs --int4-cache DIR (it empties that folder)")

    from phi_demo_dev.bench.quant import checkpoint_for

    t = time.perf_counter()
    folder = args.checkpoint or checkpoint_for("full-random")
    print(f"checkpoint {folder} ready in {time.perf_counter() - t:.0f} s")
    if args.cold:
        shutil.rmtree(args.int4_cache, ignore_errors=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "app.py", "--model", folder, "--quantize", args.quantize, "--port", str(port)]
    if args.int4_cache:
        command += ["--int4-cache", args.int4_cache]
    start = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1)
    log = ServerLog(server.stdout, start, Path(args.log) if args.log else None)
    try:
        log.start()
        from gradio_client import Client, handle_file

        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if server.poll() is not None:
                    raise SystemExit("app.py exited:\n" + "".join(log.lines[-20:])) from None
                time.sleep(0.25)
        print(f"page up {time.perf_counter() - start:.1f} s after the process started")
        questions = [("text", "What is the capital of France?", [])]
        if not args.question_only:
            questions.append(("example image", "Describe this.",
                              [handle_file(str(ROOT / "assets" / "example_image.png"))]))
        for label, text, files in questions:
            t = time.perf_counter()
            first = None
            job = client.submit({"text": text, "files": files}, [], api_name="/chat", max_new_tokens=args.tokens)
            for partial in job:
                if partial and first is None:
                    first = time.perf_counter()
            done = time.perf_counter()
            first = first or done
            rss, peak = memory(server.pid)
            print(f"{label}: first text {first - start:.1f} s after the process started ({first - t:.1f} s after "
                  f"asking), done {done - start:.1f} s ({args.tokens} new tokens at most); server resident "
                  f"{rss:.2f} GB, peak so far {peak:.2f} GB")
        if log.loaded_at is not None:
            print(f"model loaded {log.loaded_at:.1f} s after the process started ({log.loaded_line})")
        print(f"--quantize {args.quantize}: total {time.perf_counter() - start:.0f} s")
    finally:
        server.terminate()
        server.wait(30)
        log.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
