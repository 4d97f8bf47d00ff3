"""PDF documents -> page images (pypdfium2) plus the text layer of those pages. No model.

Pages are rendered with their longer side at 1344 px, three crops of the image processor:
10-point text on a Letter or A4 page is then ~17 px high, which the vision tower reads,
and a page costs about 2 k tokens. A page's text layer, when it has one, goes into the
prompt as text as well: it is cheap next to the picture, and exact where pixels are not
(numbers, names, small print). The picture stays for what text cannot carry: charts,
tables' layout, scans and handwriting.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

from phi_demo.errors import UserInputError
from phi_demo.media.image import fit_aspect

PAGE_SIDE = 1344
# Text layers beyond this go in cut, with a marker: a 20-page contract would otherwise add
# tens of thousands of tokens the user did not ask for.
MAX_TEXT_CHARS_PER_PAGE = 6000

_RANGE = r"\d+\s*(?:[-\u2013]|to)\s*\d+|\d+"
_PAGES = re.compile(
    rf"\b(?:pages?|pp?\.)\s*((?:{_RANGE})(?:\s*(?:,|and|&)\s*(?:{_RANGE}))*)", re.IGNORECASE)


@dataclass(frozen=True)
class Document:
    pages: tuple[int, ...]  # 1-based page numbers, in the order they are sent
    images: tuple[Image.Image, ...]  # RGB, one per page
    texts: tuple[str, ...]  # each page's text layer ('' when it has none: a scan)
    total: int  # pages in the file


def named_pages(text: str) -> list[int] | None:
    """The pages a message names ("page 2", "pages 3-5", "pp. 1, 4 and 7"), 1-based and in
    order, or None when it names none."""
    found: list[int] = []
    for m in _PAGES.finditer(text or ""):
        for part in re.split(r"\s*(?:,|and|&)\s*", m.group(1), flags=re.IGNORECASE):
            bounds = [int(x) for x in re.split(r"\s*(?:[-\u2013]|to)\s*", part) if x]
            lo, hi = bounds[0], bounds[-1]
            if hi < lo:
                lo, hi = hi, lo
            if hi - lo > 10_000:
                raise UserInputError(f"The page range {lo}-{hi} is too large.")
            found += [p for p in range(lo, hi + 1) if p not in found]
    return found or None


def _open(path: Path):
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            raise UserInputError(f"{path.name}: the PDF is protected by a password; "
                                 "send a copy without one.") from None
        # PDFium refuses a document with no pages as it refuses a damaged one (its error code
        # is whatever the previous failure left), so one sentence covers both.
        raise UserInputError(f"{path.name}: this PDF is damaged or has no pages, and cannot be read.") from None


def load_pdf(path: str | os.PathLike[str], pages: list[int] | None, max_pages: int) -> Document:
    """Render `pages` (or all of them, when they fit within `max_pages`) of a PDF."""
    path = Path(path)
    name = path.name
    doc = _open(path)
    try:
        total = len(doc)
        if total == 0:
            raise UserInputError(f"{name}: the PDF has no pages.")
        if pages is None:
            if total > max_pages:
                raise UserInputError(
                    f"{name} has {total} pages; at most {max_pages} can be read in this conversation. "
                    "Say which pages you mean, for example \"pages 3-5\".")
            pages = list(range(1, total + 1))
        missing = [p for p in pages if not 1 <= p <= total]
        if missing:
            raise UserInputError(f"{name} has {total} pages; there is no page {missing[0]}.")
        if len(pages) > max_pages:
            raise UserInputError(f"{name}: {len(pages)} pages were named; at most {max_pages} can be "
                                 "read in this conversation.")
        images, texts = [], []
        for number in pages:
            image, text = _page(doc, number - 1, name)
            images.append(image)
            texts.append(text)
    finally:
        doc.close()
    return Document(tuple(pages), tuple(images), tuple(texts), total)


def _page(doc, index: int, name: str):
    try:
        page = doc[index]
        try:
            width, height = page.get_size()
            if min(width, height) <= 0:
                raise UserInputError(f"{name}: page {index + 1} has no area.")
            scale = PAGE_SIDE / max(width, height)
            image = page.render(scale=scale, fill_color=(255, 255, 255, 255)).to_pil().convert("RGB")
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n").strip()
            finally:
                textpage.close()
        finally:
            page.close()
    except pdfium.PdfiumError:
        raise UserInputError(f"{name}: page {index + 1} is damaged and cannot be read.") from None
    if len(text) > MAX_TEXT_CHARS_PER_PAGE:
        text = text[:MAX_TEXT_CHARS_PER_PAGE] + " [...]"

    return fit_aspect(image), text


def text_block(name: str, document: Document) -> str:
    """The text layers of a document's pages, labelled, for the prompt; '' for a scan."""
    parts = [f"[Text of {name}, page {p}]\n{t}" for p, t in zip(document.pages, document.texts) if t]
    return "\n\n".join(parts)
