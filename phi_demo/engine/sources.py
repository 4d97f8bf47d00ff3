"""Where weights come from: the hub (with visible progress), a local folder, or the tiny model."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..errors import HOW_TO_FIX, ModelUnavailable
from ..settings import TINY_MODEL, cache_root

# The real repository also holds sample media and the old remote-code weights' extras.
_IGNORE = ["*.png", "*.jpg", "*.jpeg", "*.wav", "*.mp3", "*.flac", "*.pdf", "*.pt", "*.bin", "*.onnx"]



_tiny_lock = threading.Lock()


def tiny_folder() -> Path:
    """The tiny model's folder, built on first use; built into a temp folder and renamed so a
    half-written folder is never seen by another process."""
    from .tiny import TINY_VERSION, build_tiny

    target = cache_root() / f"tiny-random-v{TINY_VERSION}"
    with _tiny_lock:
        if (target / "tiny_random.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
        try:
            build_tiny(tmp)
            try:
                tmp.rename(target)
            except OSError:  # another process won the race; its folder is as good as ours
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_local_model(spec: str) -> bool:
    return spec != TINY_MODEL and (os.path.isdir(spec) or spec.startswith((".", "/", "~")))


def resolve(spec: str, revision: str | None, offline: bool = False,
            progress: Callable[[str], None] | None = None) -> Path:
    """A folder holding config.json, processor files and the adapters for `spec`."""
    if spec == TINY_MODEL:
        return tiny_folder()
    if is_local_model(spec):
        folder = Path(spec).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(f"The folder {folder} does not hold a model (no config.json there). {HOW_TO_FIX}")
        return folder
    return _download(spec, revision, offline, progress)


def _download(repo_id: str, revision: str | None, offline: bool, progress) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    from tqdm.auto import tqdm

    class PageTqdm(tqdm):
        """tqdm for the terminal that also reports to the page."""

        def update(self, n=1):
            out = super().update(n)
            if progress and self.total:
                progress(f"Downloading {repo_id}: {self.n / 1e9:.2f} of {self.total / 1e9:.2f} GB")
            return out

    if progress:
        progress(f"Fetching {repo_id} (revision {revision})…")
    try:
        path = snapshot_download(repo_id, revision=revision, local_files_only=offline,
                                 ignore_patterns=_IGNORE, tqdm_class=PageTqdm)
    except (LocalEntryNotFoundError, OSError) as e:
        where = "is not in the local cache and the hub is switched off" if offline else "could not be downloaded"
        raise ModelUnavailable(f"{repo_id} (revision {revision}) {where}: {_first_line(e)}. {HOW_TO_FIX}") from e
    except (RepositoryNotFoundError, HfHubHTTPError) as e:
        raise ModelUnavailable(f"{repo_id} (revision {revision}) is not available from the hub: {_first_line(e)}. {HOW_TO_FIX}") from e
    except Exception as e:  # network stacks raise many types; none may crash the app
        raise ModelUnavailable(f"{repo_id} (revision {revision}) could not be fetched: {_first_line(e)}. {HOW_TO_FIX}") from e
    return Path(path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300].rstrip(".")
