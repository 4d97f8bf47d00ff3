"""Images: open, check, convert to RGB PIL; very wide or tall ones padded."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from phi_demo.errors import UserInputError
from phi_demo.media.files import check_nonempty

# Phi-4's image processor tiles into at most 36 crops of 448 px; beyond this side
# length detail is discarded anyway, so larger images are downscaled first.
MAX_IMAGE_SIDE = 4096
# Refuse decompression bombs well before PIL's own hard limit (2 x 89 MP).
MAX_IMAGE_PIXELS = 64_000_000
# Phi-4's image processor tiles at most 36 crops of 448 px; past 36:1 its resize leaves the
# short side under 10 px and it refuses the image ("the aspect ratio is very extreme").
MAX_ASPECT = 36


def fit_aspect(img: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Pad a very wide or tall image (banner, receipt, scrolling screenshot) with white to
    at most `max_aspect`:1, as the processor itself pads its crops: nothing is cut or squeezed."""
    w, h = img.size
    if max(w, h) <= max_aspect * min(w, h):
        return img
    size = (w, math.ceil(w / max_aspect)) if w > h else (math.ceil(h / max_aspect), h)
    padded = Image.new("RGB", size, (255, 255, 255))
    padded.paste(img, (0, 0))
    return padded


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited onto white, as a viewer shows it."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = arr.min(), arr.max()
        img = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as RGB, first frame of animations, EXIF rotation applied."""
    path = Path(path)
    check_nonempty(path)
    try:
        with warnings.catch_warnings():
            # Our own, lower limit below gives the numbers; PIL still raises past 2x its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise UserInputError(
                        f"{path.name}: the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; "
                        f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."
                    )
                img.seek(0)
                img.load()
                rgb = to_rgb(img)
    except UserInputError:
        raise
    except Image.DecompressionBombError:
        raise UserInputError(f"{path.name}: the image is too large to open safely (decompression bomb).") from None
    except UnidentifiedImageError:
        raise UserInputError(f"{path.name}: this is not an image that can be read (unknown or corrupt format).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserInputError(f"{path.name}: the image is damaged or truncated ({e}).") from None
    if max(rgb.size) > MAX_IMAGE_SIDE:
        rgb.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    return fit_aspect(rgb)
