"""Videos and PDFs for the tests, made on the spot with ffmpeg, espeak-ng and fpdf2.

Each maker writes one file into a folder and returns its path; `make_all` writes them all
once per test session (about 10 s on 2 cores)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SPEECH = "The red square moves to the left."


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True)


def speech(folder: Path) -> Path:
    wav = folder / "speech.wav"
    if not wav.exists():
        subprocess.run(["espeak-ng", "-w", str(wav), SPEECH], check=True)
    return wav


def videos(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wav = speech(folder)
    out = {name: folder / name for name in (
        "clip.mp4", "silent.webm", "mute_track.mov", "sound_only.mp4", "uhd60.mp4", "long.mkv", "vfr.mkv",
        "no_streams.mkv", "truncated.mp4", "corrupt.mp4", "empty.mp4", "video_named.wav", "short.mkv",
        "portrait.mp4")}
    src = "testsrc2=size=640x360:rate=25:duration=6"
    ffmpeg("-f", "lavfi", "-i", src, "-i", str(wav), "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(out["clip.mp4"]))
    ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libvpx", "-b:v", "300k", str(out["silent.webm"]))
    # A sound track of digital silence: the frames are used, the track is not.
    ffmpeg("-f", "lavfi", "-i", src, "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "6",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out["mute_track.mov"]))
    ffmpeg("-i", str(wav), "-c:a", "aac", str(out["sound_only.mp4"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=60:duration=1", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out["uhd60.mp4"]))
    # Two hours at one frame per second, 32 px: small, quick to make, far over any limit.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=1:duration=7200", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out["long.mkv"]))
    # Variable frame rate: frames bunched at the start, sparse later.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=6", "-vf",
           "setpts='if(lt(N,90),N/(60*TB),(1.5+(N-90)/10)/TB)'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out["vfr.mkv"]))
    # As a phone stores a portrait clip: landscape pixels plus a 90° display rotation.
    ffmpeg("-i", str(out["clip.mp4"]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(out["portrait.mp4"]))
    srt = folder / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nHello\n")
    ffmpeg("-i", str(srt), str(out["no_streams.mkv"]))
    data = out["clip.mp4"].read_bytes()
    # The moov atom sits at the end of ffmpeg's mp4 by default: cutting the tail loses it.
    out["truncated.mp4"].write_bytes(data[: len(data) // 2])
    out["corrupt.mp4"].write_bytes(data[:32] + bytes(range(256)) * 64)
    out["empty.mp4"].write_bytes(b"")
    out["video_named.wav"].write_bytes(data)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=0.04", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(out["short.mkv"]))
    return out


def pdfs(folder: Path) -> dict[str, Path]:
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    out = {name: folder / name for name in ("text.pdf", "scan.pdf", "locked.pdf", "corrupt.pdf",
                                           "many.pdf", "no_pages.pdf", "truncated.pdf")}

    def text_pdf(path: Path, pages: list[str], password: str | None = None) -> None:
        doc = FPDF()
        doc.set_font("Helvetica", size=14)
        for text in pages:
            doc.add_page()
            doc.cell(text=text)
        if password:
            doc.set_encryption(owner_password="owner", user_password=password)
        doc.output(str(path))

    text_pdf(out["text.pdf"], [f"Page {i}: {100 + 7 * i} units were sold." for i in range(1, 5)])
    page = Image.new("RGB", (850, 1100), "white")
    ImageDraw.Draw(page).text((60, 60), "A SCANNED PAGE WITH NO TEXT LAYER", fill="black")
    page.save(out["scan.pdf"])
    text_pdf(out["locked.pdf"], ["secret"], password="user")
    out["corrupt.pdf"].write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    text_pdf(out["many.pdf"], [f"page {i}" for i in range(1, 501)])
    # A catalog whose page tree is empty: a valid PDF with zero pages.
    out["no_pages.pdf"].write_bytes(_minimal_pdf(kids=""))
    data = out["text.pdf"].read_bytes()
    out["truncated.pdf"].write_bytes(data[: len(data) // 3])
    return out


def _minimal_pdf(kids: str) -> bytes:
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count 0 >>"]
    body, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(body))
        body += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(body)
    body += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    body += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    body += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return body
