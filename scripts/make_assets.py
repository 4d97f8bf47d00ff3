"""Remake the example video and PDF in assets/ (both CC0, made here from nothing but
ffmpeg's test sources, espeak-ng speech and fpdf2 drawing).

    python scripts/make_assets.py        # needs ffmpeg, espeak-ng and fpdf2 (requirements-dev.txt)
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SPEECH = "A red square slides from left to right, and then a blue ball bounces twice."
SALES = [("Jan", 120), ("Feb", 95), ("Mar", 160), ("Apr", 140)]


def video(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), SPEECH], check=True)
        # overlay (unlike drawbox) evaluates its position for every frame.
        scene = ("color=c=white:s=480x270:d=8:r=24[bg];color=c=red:s=60x60:d=8:r=24[sq];"
                 "color=c=blue:s=50x50:d=8:r=24[ball];"
                 "[bg][sq]overlay=x='20+t*95':y=105:enable='lt(t,4)'[a];"
                 "[a][ball]overlay=x=215:y='200-abs(sin((t-4)*3.14159))*150':enable='gte(t,4)'")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", scene, "-i", str(wav),
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "30", "-c:a", "aac", "-b:a", "48k",
                        "-ac", "1", "-movflags", "+faststart", str(out)], check=True)


def document(out: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title("Example report")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(text="Quarterly report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 7, text="Sales rose in March after a slow February. The chart on page 2 shows "
                   "units sold per month; April stayed above January. Next quarter we expect 170 units "
                   "per month.")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(text="Units sold per month", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=12)
    base, left = 200, 30
    for i, (month, units) in enumerate(SALES):
        x = left + i * 40
        pdf.set_fill_color(40, 90, 200)
        pdf.rect(x, base - units, 25, units, style="F")
        pdf.text(x + 5, base + 8, month)
        pdf.text(x + 4, base - units - 3, str(units))
    pdf.output(str(out))


if __name__ == "__main__":
    video(ASSETS / "example_clip.mp4")
    document(ASSETS / "example_report.pdf")
    for p in ("example_clip.mp4", "example_report.pdf"):
        print(p, (ASSETS / p).stat().st_size, "bytes")
