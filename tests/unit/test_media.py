import subprocess

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from phi_demo.errors import UserInputError
from phi_demo.media.audio import load_audio
from phi_demo.media.image import MAX_ASPECT, MAX_IMAGE_SIDE, fit_aspect, load_image
from phi_demo.media.kinds import kind_of, sniff


@pytest.mark.parametrize("mode,color", [("RGBA", (10, 20, 30, 0)), ("L", 128), ("CMYK", (0, 255, 0, 0)),
                                        ("I;16", 40000), ("LA", (50, 255)), ("1", 1), ("F", 0.5)])
def test_image_modes_become_rgb(tmp_path, mode, color):
    img = Image.new(mode, (20, 10), color)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16", "F") else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_transparent_pixels_composite_on_white(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "p.png"
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0] * 256)
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    assert load_image(path).getpixel((1, 1)) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "r.jpg"
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_animated_gif_first_frame(tmp_path):
    path = tmp_path / "a.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((0, 0))[0] > 200


def test_bad_images_get_sentences(tmp_path):
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(UserInputError, match="empty"):
        load_image(empty)
    liar = tmp_path / "l.png"
    liar.write_text("just text")
    with pytest.raises(UserInputError, match="not an image"):
        load_image(liar)
    trunc = tmp_path / "t.png"
    good = tmp_path / "g.png"
    Image.effect_noise((200, 200), 50).save(good)
    trunc.write_bytes(good.read_bytes()[:400])
    with pytest.raises(UserInputError, match="damaged|truncated|not an image"):
        load_image(trunc)


def test_huge_images_are_downscaled(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (6000, 1000)).save(path)
    assert max(load_image(path).size) == MAX_IMAGE_SIDE


def test_decompression_bomb_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)  # tiny file, 144 megapixels
    with pytest.raises(UserInputError, match="12000x12000 = 144 megapixels; the limit is 64 megapixels"):
        load_image(path)
    worse = tmp_path / "worse.png"
    Image.new("1", (14500, 14500)).save(worse)  # past PIL's own hard limit
    with pytest.raises(UserInputError, match="decompression bomb"):
        load_image(worse)


@pytest.mark.parametrize("sr,channels,subtype", [(16000, 1, "PCM_16"), (48000, 2, "PCM_16"), (8000, 1, "PCM_U8"),
                                                 (44100, 6, "FLOAT"), (22050, 1, "PCM_24")])
def test_wav_variants_become_16k_mono(tmp_path, sr, channels, subtype):
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone] * channels, axis=1)
    path = tmp_path / "a.wav"
    sf.write(path, data, sr, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 16000) <= 2
    assert 0.3 < np.abs(out).max() < 0.6


@pytest.mark.parametrize("fmt,args", [("flac", []), ("ogg", ["-c:a", "libvorbis"]), ("mp3", []),
                                      ("webm", ["-c:a", "libopus"]), ("m4a", ["-c:a", "aac"])])
def test_compressed_formats_decode(tmp_path, fmt, args):
    src = tmp_path / "s.wav"
    sf.write(src, 0.3 * np.sin(np.arange(48000) / 10), 48000)
    dst = tmp_path / f"s.{fmt}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    out = load_audio(dst)
    assert out.dtype == np.float32 and abs(len(out) / 16000 - 1.0) < 0.1


def test_bad_audio_gets_sentences(tmp_path):
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    with pytest.raises(UserInputError, match="empty"):
        load_audio(empty)
    liar = tmp_path / "l.wav"
    liar.write_text("not audio at all")
    with pytest.raises(UserInputError, match="not audio|damaged"):
        load_audio(liar)
    short = tmp_path / "s.wav"
    sf.write(short, np.zeros(10, dtype=np.float32), 16000)
    with pytest.raises(UserInputError, match="too short"):
        load_audio(short)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16000 * 5, dtype=np.float32), 16000)
    with pytest.raises(UserInputError, match="5.0 s long; the limit is 3 s"):
        load_audio(long, max_seconds=3)


def test_kind_of_reads_the_content_not_the_name(tmp_path):
    made = {"png": (tmp_path / "blob", lambda p: Image.new("RGB", (4, 4)).save(p, "PNG")),
            "jpeg": (tmp_path / "photo.wav", lambda p: Image.new("RGB", (4, 4)).save(p, "JPEG")),
            "webp": (tmp_path / "w", lambda p: Image.new("RGB", (4, 4)).save(p, "WEBP")),
            "wav": (tmp_path / "sound.png", lambda p: sf.write(p, np.full(800, 0.1, np.float32), 16000, format="WAV")),
            "flac": (tmp_path / "f", lambda p: sf.write(p, np.full(800, 0.1, np.float32), 16000, format="FLAC"))}
    for fmt, (path, make) in made.items():
        make(path)
        assert kind_of(path) == ("image" if fmt in ("png", "jpeg", "webp") else "audio"), fmt
    text = tmp_path / "z.png"
    text.write_text("hello")
    with pytest.raises(UserInputError, match="z.png: this is not an image, audio, a video or a PDF"):
        kind_of(text)
    assert kind_of(text, mime_type="image/png") == "image"  # the upload's own type, when content says nothing
    with pytest.raises(UserInputError, match="could not be read"):
        kind_of(tmp_path)  # a folder (and so a device or a pipe) is never opened


def test_sniff_signatures():
    assert sniff(b"ID3\x04") == "audio" and sniff(b"\xff\xfb\x90\x00") == "audio"  # mp3
    # mp4/m4a/mov, webm/mkv and AVI hold sound, pictures or both: PyAV looks inside them.
    for head in (b"\x00\x00\x00\x20ftypM4A ", b"\x00\x00\x00\x14ftypqt  ", b"\x1a\x45\xdf\xa3", b"RIFF\x00\x00\x00\x00AVI "):
        assert sniff(head) == "container", head
    assert sniff(b"%PDF-1.7") == "pdf" and sniff(b"RIFF\x00\x00\x00\x00WAVE") == "audio"


@pytest.mark.parametrize("size", [(4096, 1), (1, 4096), (2, 2000), (3000, 5), (37, 1), (36, 1), (448, 448)])
def test_extreme_shapes_are_padded_to_what_the_processor_takes(size):
    out = fit_aspect(Image.new("RGB", size, (0, 0, 0)))
    w, h = out.size
    assert max(w, h) <= MAX_ASPECT * min(w, h)
    assert out.getpixel((0, 0)) == (0, 0, 0) and (out.size == size or out.getpixel((w - 1, h - 1)) == (255, 255, 255))
    assert (out.size == size) == (max(size) <= MAX_ASPECT * min(size))
