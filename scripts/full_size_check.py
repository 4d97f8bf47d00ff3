"""The real size through the app itself (minutes, ~13 GB of disk): write the full-size random
checkpoint if it is not there, start `app.py --model DIR --quantize int4`, answer one /chat
request about the example image, and print times and the server's memory.

    python scripts/full_size_check.py [--checkpoint DIR] [--quantize int4|none] [--tokens 16]

Outside the test suite on purpose: its numbers go into docs/PERFORMANCE.md."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--quantize", default="int4")
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args()

    from phi_demo.bench.quant import checkpoint_for

    t = time.perf_counter()
    folder = args.checkpoint or checkpoint_for("full-random")
    print(f"checkpoint {folder} ready in {time.perf_counter() - t:.0f} s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "app.py", "--model", folder, "--quantize", args.quantize,
                               "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        from gradio_client import Client, handle_file

        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if server.poll() is not None:
                    raise SystemExit("app.py exited") from None
                time.sleep(1)
        print(f"page up in {time.perf_counter() - start:.1f} s")
        for label, files in (("text", []), ("example image", [handle_file(str(ROOT / "assets" / "example_image.png"))])):
            t = time.perf_counter()
            first = None
            job = client.submit({"text": "Describe this.", "files": files}, [], api_name="/chat",
                                max_new_tokens=args.tokens)
            for partial in job:
                if partial:
                    first = first or time.perf_counter() - t
            total = time.perf_counter() - t
            rss, peak = memory(server.pid)
            print(f"{label}: first text after {first or total:.1f} s, done in {total:.1f} s "
                  f"({args.tokens} new tokens at most); server resident {rss:.2f} GB, peak so far {peak:.2f} GB")
        print(f"--quantize {args.quantize}: load included in the first answer; "
              f"total {time.perf_counter() - start:.0f} s")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
