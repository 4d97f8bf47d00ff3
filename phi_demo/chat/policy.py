"""What stays in the prompt of a long conversation."""

from __future__ import annotations

from typing import Sequence

from phi_demo.chat.messages import Turn

EARLIER_CLIP = "(an audio clip from earlier in the conversation, no longer included)"


def _without_oldest_clips(turns: Sequence[Turn], kinds: list[list[str]], keep: int):
    """A conversation with more audio clips than `keep` (a voice conversation is one clip per
    turn) goes on: the oldest clips of the earlier turns are left out of the prompt, and
    their answers stay. A turn that was only a clip keeps its place as EARLIER_CLIP, so the
    answer after it still follows a question. The new message's own clips are never left
    out: too many of those is refused as before."""
    excess = sum(k == "audio" for ks in kinds for k in ks) - keep
    if excess <= 0:
        return list(turns), kinds, 0
    left_out, out_turns, out_kinds = 0, [], []
    for i, (t, ks) in enumerate(zip(turns, kinds)):
        if t.role == "user" and i < len(turns) - 1 and left_out < excess and "audio" in ks:
            files, kept = [], []
            for f, k in zip(t.files, ks):
                if k == "audio" and left_out < excess:
                    left_out += 1
                else:
                    files.append(f)
                    kept.append(k)
            t, ks = Turn(t.role, t.text or EARLIER_CLIP, tuple(files)), kept
        out_turns.append(t)
        out_kinds.append(ks)
    return out_turns, out_kinds, left_out
