"""Hands-free turns: microphone audio in, spoken turns out, the way a person takes turns in
a call. No gradio and no model: the voice-activity detector is handed in.

- a turn begins when speech has lasted `onset_s` (a cough or a click does not start one);
  the page then stops whatever is being said or generated (barge-in);
- it ends after `end_pause_s` of silence (the live view's pause, a little longer: people
  pause mid-sentence), or at `max_turn_s`;
- the turn's audio starts `pre_roll_s` before the speech, so its first syllable is kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from phi_demo.media.audio import SAMPLE_RATE
from phi_demo.speech.vad import SpeechFrames

# "onset": a turn began; "turn": one ended (with its audio); "dropped": what began was too
# short to be a turn (a noise, not a question).
VoiceEvent = Literal["onset", "turn", "dropped"]


@dataclass
class VoiceTurns:
    speech: SpeechFrames  # the detector's state for this stream
    end_pause_s: float = 0.8
    onset_s: float = 0.2
    min_speech_s: float = 0.4
    max_turn_s: float = 60.0
    pre_roll_s: float = 0.3
    sr: int = SAMPLE_RATE

    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer_start_s: float = 0.0  # stream time of buffer[0]
    received_s: float = 0.0
    speaking: bool = False  # a turn has begun and not ended
    turns: int = 0

    def feed(self, samples: np.ndarray) -> list[tuple[VoiceEvent, np.ndarray | None]]:
        """Add audio; returns what happened: ("onset", None) when a turn begins, ("turn", audio)
        when one ends, in order (a long chunk may hold both)."""
        samples = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
        self.speech.feed(samples)
        self.buffer = np.concatenate([self.buffer, samples])
        self.received_s += len(samples) / self.sr
        events: list[tuple[VoiceEvent, np.ndarray | None]] = []
        if not self.speaking:
            if self.speech.speech_s(self.buffer_start_s, self.received_s) >= self.onset_s:
                self.speaking = True
                events.append(("onset", None))
                begin = self.speech.first_speech(self.buffer_start_s, self.received_s)
                begin = self.buffer_start_s if begin is None else begin
                self._keep_last(self.received_s - max(self.buffer_start_s, begin - self.pre_roll_s))
            else:
                self._keep_last(self.pre_roll_s + self.onset_s)
                return events
        pause_end = self.speech.first_pause_end(self.buffer_start_s, self.received_s, self.end_pause_s)
        long_s = self.received_s - self.buffer_start_s
        if pause_end is not None or long_s >= self.max_turn_s:
            end_s = pause_end - self.end_pause_s + 0.2 if pause_end is not None else self.received_s
            cut = int(round((end_s - self.buffer_start_s) * self.sr))
            audio = self.buffer[:cut]
            heard = self.speech.speech_s(self.buffer_start_s, end_s)
            rest_from = pause_end if pause_end is not None else self.received_s
            drop = int(round((rest_from - self.buffer_start_s) * self.sr))
            self.buffer = self.buffer[drop:]
            self.buffer_start_s = rest_from
            self.speaking = False
            if heard >= self.min_speech_s:
                self.turns += 1
                events.append(("turn", audio))
            else:
                events.append(("dropped", None))
        return events

    def _keep_last(self, seconds: float) -> None:
        keep = int(seconds * self.sr)
        drop = max(0, len(self.buffer) - keep)
        self.buffer = self.buffer[drop:]
        self.buffer_start_s += drop / self.sr
