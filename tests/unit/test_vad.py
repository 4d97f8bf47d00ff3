"""The voice-activity detectors against known sentence times: where the energy threshold
fails (noise above -45 dBFS) and silero-vad does not."""

import sys

import pytest

from phi_demo.speech.vad import EnergyVAD, SileroVAD, load_vad
from phi_demo_dev.bench.vad import SENTENCES, score, synth_recording


@pytest.fixture(scope="module")
def silero():
    return SileroVAD()


@pytest.mark.parametrize("snr", [None, 10.0])
def test_phrase_boundaries_clean_and_at_10_db_snr(silero, snr):
    audio, truth = synth_recording(SENTENCES[:4], snr_db=snr, seed=1)
    s = score(silero.segments(audio), truth)
    assert s["found"] == s["pauses"] == 3 and s["segments"] == 4
    assert s["start_err_s"] < 0.15 and s["end_err_s"] < 0.3, s
    e = score(EnergyVAD().segments(audio), truth)
    if snr is None:
        assert e["found"] == 3 and e["start_err_s"] < 0.1
    else:  # the noise floor is far above -45 dBFS: one segment from start to end
        assert e["found"] == 0 and e["segments"] == 1


def test_the_energy_detector_is_the_fallback_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # as if the package were missing
    vad, why = load_vad()
    assert isinstance(vad, EnergyVAD) and why.startswith("energy threshold (silero-vad could not load")
    vad, why = load_vad(prefer="energy")
    assert isinstance(vad, EnergyVAD) and why == "energy threshold"
