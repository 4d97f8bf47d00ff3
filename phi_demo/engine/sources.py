"""Where weights come from: the hub (with visible progress), a local folder, or the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from tqdm.auto import tqdm

from phi_demo.engine.tiny import TINY_VERSION, build_tiny
from phi_demo.errors import HOW_TO_FIX, ModelUnavailable
from phi_demo.settings import TINY_MODEL, cache_root

# What the app reads besides the weight shards: config and generation config, the weights'
# index, the processor's and tokenizer's files, the chat template. The repository also holds
# sample media, a PDF report, remote code and (on some branches) a second set of shards.
SMALL_FILES = ["*.json", "*.jinja", "merges.txt"]
INDEX = "model.safetensors.index.json"
ADAPTER_FILES = [f"{sub}/{name}" for sub in ("vision-lora", "speech-lora")
                 for name in ("adapter_config.json", "adapter_model.safetensors")]


def weight_files(folder: Path) -> list[str]:
    """The weight files the checkpoint's index names (or its single file)."""
    index = folder / INDEX
    if not index.is_file():
        return ["model.safetensors"]

    return sorted(set(json.loads(index.read_text())["weight_map"].values()))



_tiny_lock = threading.Lock()


def tiny_folder() -> Path:
    """The tiny model's folder, built on first use; built into a temp folder and renamed so a
    half-written folder is never seen by another process."""

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


def _download(repo_id: str, revision: str | None, offline: bool, progress: Callable[[str], None] | None) -> Path:

    class PageTqdm(tqdm):
        """tqdm for the terminal that also reports to the page."""

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            if progress and self.total:
                progress(f"Downloading {repo_id}: {self.n / 1e9:.2f} of {self.total / 1e9:.2f} GB")
            return out

    if progress:
        progress(f"Fetching {repo_id} (revision {revision})…")
    try:
        # The small files first: the index then says which shards this revision uses, so a
        # branch that still holds older shards does not cost a second download of the model.
        small = Path(snapshot_download(repo_id, revision=revision, local_files_only=offline,
                                       allow_patterns=SMALL_FILES, tqdm_class=PageTqdm))
        path = snapshot_download(repo_id, revision=revision, local_files_only=offline,
                                 allow_patterns=SMALL_FILES + ADAPTER_FILES + weight_files(small),
                                 tqdm_class=PageTqdm)
    except (LocalEntryNotFoundError, OSError) as e:  # the hub's own errors (a missing repo too) are OSErrors
        where = "is not in the local cache and the hub is switched off" if offline else "could not be downloaded"
        raise ModelUnavailable(f"{repo_id} (revision {revision}) {where}: {_first_line(e)}. {HOW_TO_FIX}") from e
    except Exception as e:  # network stacks raise many types; none may crash the app
        raise ModelUnavailable(f"{repo_id} (revision {revision}) could not be fetched: {_first_line(e)}. {HOW_TO_FIX}") from e
    return Path(path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300].rstrip(".")
