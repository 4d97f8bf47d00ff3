"""Opening what a user uploaded: the file is there and not empty, or a sentence says so."""

from __future__ import annotations

from pathlib import Path

from phi_demo.errors import UserInputError


def check_nonempty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise UserInputError(f"{path.name}: the file could not be read.") from None
    if size == 0:
        raise UserInputError(f"{path.name}: the file is empty (0 bytes).")
