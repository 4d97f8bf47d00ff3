"""Videos and PDFs on the tiny model: what the model is given, in what order, at what cost,
and that a follow-up question about the same file does not process it again."""

import threading

import pytest

from phi_demo.chat import request as conversation
from phi_demo.chat.messages import Turn
from phi_demo.chat.request import Limits, build_request
from phi_demo.contract import collect
from phi_demo.media import pdf, video
from phi_demo.settings import GenerationSettings
from tests.av_fixtures import pdfs, videos
from tests.helpers import ROOT

GEN = GenerationSettings(max_new_tokens=6)
CLIP = str(ROOT / "assets" / "example_clip.mp4")
REPORT = str(ROOT / "assets" / "example_report.pdf")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("av")
    return {**videos(d), **pdfs(d)}


def test_a_clip_is_its_frames_then_its_sound_then_the_text():
    r = build_request([Turn("user", "What happens?", (CLIP,))])
    assert [m.kind for m in r.media] == ["image"] * 4 + ["audio"]  # 8 s clip: one frame per 2 s
    assert r.prompt.startswith("<|user|>" + "<|image|>" * 4 + "<|audio|>[Video example_clip.mp4: 4 frames at 1.0, ")
    assert r.prompt.endswith("then its sound]\n\nWhat happens?<|end|><|assistant|>")
    assert all(max(im.size) == video.FRAME_SIDE for im in r.images)
    import av

    with av.open(CLIP) as c:  # the whole sound track (the speech, shorter than the picture), at 16 kHz
        track = float(c.streams.audio[0].duration * c.streams.audio[0].time_base)
    assert r.audios[0].size / 16000 == pytest.approx(track, abs=0.05)
    assert r.modality == "vision"


def test_frames_follow_the_clip_length_up_to_the_cap(made):
    assert len(video.load_video(made["clip.mp4"], max_frames=8).frames) == 3  # 6 s
    assert len(video.load_video(made["clip.mp4"], max_frames=2).frames) == 2
    clip = video.load_video(made["clip.mp4"], max_frames=16)
    assert clip.times == pytest.approx([1.0, 3.0, 5.0], abs=0.05)


def test_variable_frame_rate_frames_are_taken_at_their_times(made):
    # 90 frames in the first 1.5 s, then one every 0.1 s: frame times, not frame counts, decide.
    clip = video.load_video(made["vfr.mkv"], max_frames=6)
    want = video.frame_times(clip.seconds, 6)
    assert clip.times == pytest.approx(want, abs=0.1)


def test_a_frame_costs_one_crop():
    """The token cost per frame that docs/ and the module docstring state, from the processor."""
    from PIL import Image
    from transformers.models.phi4_multimodal.image_processing_phi4_multimodal import (
        Phi4MultimodalImageProcessor,
    )

    proc = Phi4MultimodalImageProcessor()

    def tokens(size):
        return int(proc([Image.new("RGB", size)], return_tensors="pt")["num_img_tokens"][0])

    assert tokens(video.fit_frame(1920, 1080)) == 426 and tokens(video.fit_frame(1080, 1080)) == 545
    assert tokens((1920, 1080)) == 3918  # unshrunk: 9 times as many


def test_a_phone_s_portrait_clip_stands_upright(made, tmp_path):
    import subprocess

    import numpy as np
    from PIL import Image

    clip = video.load_video(made["portrait.mp4"], max_frames=1)
    assert clip.frames[0].size == (252, 448)  # portrait, as a player shows it
    shown = tmp_path / "shown.png"  # ffmpeg's own rotation of the same frame
    subprocess.run(["ffmpeg", "-v", "error", "-ss", str(clip.times[0]), "-i", str(made["portrait.mp4"]),
                    "-frames:v", "1", "-vf", "scale=252:448", str(shown)], check=True)
    diff = np.abs(np.asarray(Image.open(shown).convert("RGB"), float) - np.asarray(clip.frames[0], float)).mean()
    assert diff < 20, diff


def test_4k_60fps_is_shrunk_and_quick(made):
    import time

    t = time.perf_counter()
    clip = video.load_video(made["uhd60.mp4"], max_frames=8)
    assert clip.frames[0].size == (448, 252) and time.perf_counter() - t < 20


def test_a_clip_without_sound_is_its_frames(made):
    for name in ("silent.webm", "mute_track.mov"):
        r = build_request([Turn("user", "x", (str(made[name]),))])
        assert {m.kind for m in r.media} == {"image"}, name
        assert "(it has no sound)" in r.prompt


def test_a_clip_without_picture_is_audio(made):
    r = build_request([Turn("user", "x", (str(made["sound_only.mp4"]),))])
    assert [m.kind for m in r.media] == ["audio"] and "Video" not in r.prompt


def test_a_pdf_is_its_pages_and_their_text():
    r = build_request([Turn("user", "Which month sold most?", (REPORT,))])
    assert [m.kind for m in r.media] == ["image", "image"]
    assert max(r.images[0].size) == pdf.PAGE_SIDE
    assert "[Text of example_report.pdf, page 1]\nQuarterly report" in r.prompt
    assert "[Text of example_report.pdf, page 2]\nUnits sold per month\nJan\n120" in r.prompt
    assert r.prompt.index("page 2]") < r.prompt.index("Which month sold most?")


def test_a_scan_has_no_text_block(made):
    r = build_request([Turn("user", "Read it", (str(made["scan.pdf"]),))])
    assert len(r.images) == 1 and "[Text of" not in r.prompt


def test_the_pages_named_in_the_message_are_read(made):
    r = build_request([Turn("user", "Compare pages 2-3", (str(made["text.pdf"]),))])
    assert len(r.images) == 2
    assert "page 2]\nPage 2: 114 units" in r.prompt and "page 3]\nPage 3: 121 units" in r.prompt
    assert "page 1]" not in r.prompt and "page 4]" not in r.prompt


@pytest.mark.parametrize("text, pages", [
    ("what is on page 2?", [2]), ("pages 3-5", [3, 4, 5]), ("Pages 3 to 5", [3, 4, 5]), ("p. 7", [7]),
    ("pp. 1, 4 and 9", [1, 4, 9]), ("pages 5-3", [3, 4, 5]), ("page 2 and page 2", [2]),
    ("pages 1–2 (en dash)", [1, 2]), ("no pages here", None), ("the 3 pages", None), ("", None),
])
def test_named_pages(text, pages):
    assert pdf.named_pages(text) == pages


def test_frames_and_pages_count_against_the_image_limit():
    with pytest.raises(conversation.UserInputError, match=r"6 images \(video frames and PDF pages count as images\); "
                                                          r"the limit is 5"):
        build_request([Turn("user", "x", (CLIP, REPORT))], limits=Limits(max_images=5))
    build_request([Turn("user", "x", (CLIP, REPORT))], limits=Limits(max_images=6))


def test_a_follow_up_does_not_process_the_video_again(engine):
    """The decoded frames, the processor's crops and the prompt's KV cache all carry over."""
    from phi_demo.engine.image_cache import CachedImageProcessor

    cache = engine.load().processor.image_processor
    assert isinstance(cache, CachedImageProcessor)
    turns = [Turn("user", "What happens?", (CLIP,))]
    decoded_before = conversation.decoded_media.misses
    first, s1 = collect(engine.stream(build_request(turns), GEN, threading.Event()))
    decoded_after_first = conversation.decoded_media.misses
    crops = cache.misses
    turns += [Turn("assistant", first), Turn("user", "And what does the voice say?")]
    _, s2 = collect(engine.stream(build_request(turns), GEN, threading.Event()))
    assert decoded_after_first - decoded_before <= 1 and conversation.decoded_media.misses == decoded_after_first
    assert s2.cached_tokens >= s1.prompt_tokens  # the whole first turn, frames and sound, from the KV cache
    assert cache.misses == crops
