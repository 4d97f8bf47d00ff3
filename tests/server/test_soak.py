"""A long session through /chat (issue #26): 20 mixed turns in one chat, the whole history
sent each time as a program does, on the server whose limits are 3 images and 2 clips. The
benchmark's soak section runs 100 (docs/PERFORMANCE.md)."""

import pytest

from phi_demo.contract import GenerationStats
from phi_demo_dev.soak import MIX, run_soak, session_files

pytestmark = pytest.mark.server


def test_twenty_mixed_turns_are_all_answered_past_every_limit(server, tmp_path):
    assert server.settings.max_images == 3 and server.settings.max_audio_clips == 2
    turns = session_files(tmp_path, 20)
    assert {kind for kind, _, _ in turns} == set(MIX)
    start, answered = len(server.engine.requests), len(server.engine.stats)
    result = run_soak(server.client, turns, max_new_tokens=4, marks=4, warm_up=10)
    assert result.refused == [] and result.answered == 20, result.lines(10)
    requests = [r for r, _, _ in server.engine.requests[start:] if not r.urgent]
    stats = server.engine.stats[answered:]
    assert len(requests) == 20 and len(stats) == 20 and all(isinstance(s, GenerationStats) for s in stats)
    last = requests[-1]
    # Past the limits the oldest media left as notes, and the newest are still read.
    assert last.prompt.count("<|image|>") <= 3 and last.prompt.count("<|audio|>") <= 2
    assert "(earlier image: image2.png)" in last.prompt and "(earlier audio clip" in last.prompt
    # Between drops the prompt's beginning stays put: most turns reuse the previous turn's cache.
    reused = [s for s in stats[1:] if s.cached_tokens > s.prompt_tokens // 2]
    assert len(reused) >= len(stats) // 2, [(s.prompt_tokens, s.cached_tokens) for s in stats]
