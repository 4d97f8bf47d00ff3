"""Many users at once, and storms of cancelled requests, against the real server."""

import threading

import pytest
from gradio_client import Client

from tests.helpers import generate_threads, wait_until

pytestmark = pytest.mark.server


def ask(url, seed):
    return Client(url, verbose=False).predict({"text": f"Story number {seed}", "files": []}, [], api_name="/chat",
                                               max_new_tokens=24, do_sample=True, temperature=1.0, seed=seed)


def test_eight_concurrent_clients_get_their_own_answers(server):
    alone = {seed: ask(server.url, seed) for seed in range(8)}
    assert len(set(alone.values())) > 1  # the seeds matter
    together = {}
    threads = [threading.Thread(target=lambda s=s: together.__setitem__(s, ask(server.url, s))) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together == alone


def test_fifty_cancelled_jobs_in_a_row(server):
    server.engine.force_length = True
    try:
        for _ in range(50):
            job = server.client.submit({"text": "Go on", "files": []}, [], api_name="/chat", max_new_tokens=4000)
            assert wait_until(lambda job=job: len(job.outputs()) >= 1, 30)
            job.cancel()
        assert wait_until(lambda: not generate_threads(), 10)
    finally:
        server.engine.force_length = False
    assert isinstance(server.client.predict({"text": "hi", "files": []}, [], api_name="/chat", max_new_tokens=3), str)
