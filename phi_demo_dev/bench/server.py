"""The third path: a full request through the running Gradio server, from another process."""

from __future__ import annotations

import sys
import time

from phi_demo_dev.bench.common import BENCH_QUESTION, BENCH_SYSTEM, ROOT


class RemoteClient:
    """gradio_client in a process of its own, as a real client is. In the benchmark's own
    process its result iterator, which polls every millisecond, would compete with the
    server's generation thread for the GIL (2 CPU cores), and slow the very thing measured."""

    def __init__(self, url: str):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-m", "phi_demo_dev.bench", "--client-for", url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self._ask({"n": 0})  # wait until it is connected

    def _ask(self, msg: dict) -> dict:
        import json

        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's client process ended")
        return json.loads(line)

    def chat(self, n: int) -> tuple[float, float]:
        """(seconds to the first text, seconds to the end) of one /chat request of n tokens."""
        r = self._ask({"n": n})
        return r["first"], r["end"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def client_loop(url: str) -> int:
    """The client process: one /chat request per line of stdin, timings on stdout."""
    import json

    from gradio_client import Client

    client = Client(url, verbose=False)
    for line in sys.stdin:
        n = json.loads(line)["n"]
        first = end = 0.0
        if n:
            t = time.perf_counter()
            job = client.submit({"text": BENCH_QUESTION, "files": []}, [], api_name="/chat", max_new_tokens=n,
                                system_prompt=BENCH_SYSTEM)
            for _ in job:
                if not first:
                    first = time.perf_counter() - t
            end = time.perf_counter() - t
        print(json.dumps({"first": first or end, "end": end}), flush=True)
    return 0


def server_stream(client: RemoteClient, engine, n: int) -> tuple[float, float, float]:
    """Through HTTP, the queue and the page's coalesced updates. Decode speed cannot be seen
    from the client (updates are batched), so only the first text and the end are timed."""
    engine.load().prefix_cache.clear()
    first, end = client.chat(n)
    return first, float("nan"), n / end

