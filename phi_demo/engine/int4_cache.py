"""Quantize once: `--quantize int4`'s model on disk (`--int4-cache`, `--int4-cache-budget`).

The first int4 load of a checkpoint writes everything `load_int4` produced — the packed int4
weights with their scales and zero points, the int8 token embedding with its scales, and
every other tensor of the model (encoders, norms, biases) — as one safetensors file. Later
loads map that file and never open the checkpoint's weight shards; only the LoRA adapters
are still read from the checkpoint folder.

An entry is a folder `<root>/<key>/` holding `model.safetensors` and `manifest.json`. It is
written into a temporary folder beside it, flushed to disk, and renamed into place, the
manifest last; so a crash leaves a `.tmp-*` folder (removed later) and never a half entry
under a key. Entries are never rewritten in place: another process may have one mapped, and
a mapped file that shrinks kills its reader (SIGBUS), while an unlinked one stays readable.

The key is the checkpoint's identity, never its bytes (hashing 12 GB would cost more than
quantizing): a hub snapshot's commit, else the index file's content (or the single file's
name) with each weight file's size and mtime_ns, plus everything that changes the packed
bytes: QUANTIZER_VERSION, the group rule, the compute dtype, torch's version (the layout is
its CPU kernel's) and the quantized modules. A changed key is a plain miss; an entry under
the right key that fails the checks below is removed and rebuilt, with a notice. The packed
layout also depends on the CPU: torch packs 64-row blocks for AVX-512 and 32-row ones for
AVX2, so a folder shared between machines keeps one entry per kind of CPU.

Mapped, not read: at full size (4.47 GB, 2 cores) reading the entry into memory of its own
took 4.7-5.0 s — fresh anonymous pages cost ~1 GB/s to fault in on this kind of VM — and
left a second copy in the page cache; mapping it took 0.03 s, and touching every page 0.5 s
more. Both end at the same resident size (5.0 GB), but mapped pages are the page cache's
own: one copy in RAM, clean, which the kernel can drop and re-read under pressure.

What a warm load verifies, and why that much: the manifest's key and version, each file's
size, the safetensors header (offsets contiguous and inside the file, sizes that match
dtype x shape, every tensor aligned for mapping), every tensor's name, dtype and shape
against the model skeleton built from config.json — 0.02 s in all — and a CRC32 of the
whole file, 64 MiB at a time on all cores, against the CRCs the writer recorded: 1.1-1.2 s
on 2 idle cores, 0.3 s of which pages the file in, which the first answer does anyway for
the decoder. The structural checks catch every damage the write protocol can leave
(truncation, a partial write, a missing or garbled manifest, another version); only the CRC
catches changed bytes inside the tensors, which would otherwise become wrong answers with
no error. ~1 s per start is worth that; VERIFY_DATA switches it off."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
import zlib
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from phi_demo.errors import SettingError
from phi_demo.settings import AppSettings, cache_root, parse_size

log = logging.getLogger(__name__)

# Bump whenever what load_int4 produces changes (the quantization, the packing, the names
# or dtypes of the buffers): it is part of the on-disk cache's key, so old entries miss.
QUANTIZER_VERSION = 1

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
CRC_CHUNK = 64 << 20
# The whole-file CRC at load (~1 s for a full-size entry on 2 cores; the module docstring
# says why it is on).
VERIFY_DATA = True
# What the folder may be asked to hold beyond the budget: free disk kept for everything else.
DISK_MARGIN = 1 << 30
_KEY = re.compile(r"[0-9a-f]{24}")
_TMP = re.compile(r"\.tmp-(?P<key>[0-9a-f]{24})-(?P<pid>\d+)-[0-9a-f]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_STALE_TMP_S = 6 * 3600

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
# Name -> (dtype, shape) of every tensor an entry must hold.
Expected = dict[str, tuple[torch.dtype, tuple[int, ...]]]


class CacheDamaged(Exception):
    """An entry under the wanted key that cannot be used; the message says why."""


def checkpoint_identity(folder: Path, files: list[str]) -> dict[str, Any]:
    """Who the checkpoint is, from metadata only: a hub snapshot's folder is named after its
    commit (immutable); a local folder is its index (or single file's name), config.json and
    each weight file's size and mtime_ns. The folder's path is left out, so a moved folder
    (mv keeps mtimes) keeps its entry."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and _COMMIT.fullmatch(folder.name):
        return {"hub": folder.parent.parent.name, "commit": folder.name}
    index = folder / "model.safetensors.index.json"
    config = folder / "config.json"
    ident: dict[str, Any] = {"index_sha256": _sha256(index.read_bytes()) if index.is_file() else None,
                   "config_sha256": _sha256(config.read_bytes()) if config.is_file() else None}
    if not index.is_file():
        ident["single"] = files[0]
    ident["files"] = [[name, (st := (folder / name).stat()).st_size, st.st_mtime_ns] for name in files]
    return ident


def cache_key(identity: dict[str, Any], **parts: object) -> tuple[str, dict[str, Any]]:
    """(key, the parts it was made of): the parts go into the manifest, readable."""
    made_of: dict[str, Any] = {"checkpoint": identity, **parts}
    return _sha256(json.dumps(made_of, sort_keys=True).encode())[:24], made_of


@dataclass
class Entry:
    path: Path
    bytes: int
    last_used: float


class Int4Cache:
    """A folder of entries, at most `budget` bytes; the least recently used go first."""

    def __init__(self, root: str | os.PathLike, budget: int) -> None:
        self.root = Path(root).expanduser()
        self.budget = int(budget)

    def entry(self, key: str) -> Path:
        return self.root / key

    # --- reading -------------------------------------------------------------------
    def read(self, key: str, expected: Expected, optional: AbstractSet[str] = frozenset(),
             ) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, memory-mapped (None if there is none). `expected` is name ->
        (dtype, shape) from the model skeleton; names in `optional` may be absent. Raises
        CacheDamaged, after removing the entry, if anything does not check out."""
        folder = self.entry(key)
        if not folder.is_dir():
            return None
        try:
            tensors = self._read(folder, key, expected, optional)
        except CacheDamaged:
            self.remove(folder)
            raise
        try:
            os.utime(folder / MANIFEST)  # its mtime is the entry's last use, for eviction
        except OSError:
            pass
        return tensors

    def _read(self, folder: Path, key: str, expected: Expected, optional: AbstractSet[str]) -> dict[str, torch.Tensor]:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise CacheDamaged("its manifest is missing (a write that did not finish?)") from None
        except (OSError, ValueError) as e:
            raise CacheDamaged(f"its manifest is unreadable ({e})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise CacheDamaged("its manifest is not an entry's manifest")
        if manifest.get("quantizer_version") != QUANTIZER_VERSION:
            raise CacheDamaged(f"it was written by quantizer version {manifest.get('quantizer_version')!r}, "
                               f"this is version {QUANTIZER_VERSION}")
        if manifest.get("key") != key:
            raise CacheDamaged("its manifest names another key")
        if set(manifest["files"]) != {WEIGHTS}:
            raise CacheDamaged(f"its manifest lists {sorted(manifest['files'])}, not {WEIGHTS}")
        path = folder / WEIGHTS
        try:
            size = path.stat().st_size
        except OSError:
            raise CacheDamaged(f"{WEIGHTS} is missing") from None
        want = manifest["files"][WEIGHTS].get("bytes")
        if size != want:
            raise CacheDamaged(f"{WEIGHTS} holds {size:,} bytes, the manifest says {want:,}" if isinstance(want, int)
                               else "its manifest gives no size")
        header, base = _check_header(path, size)
        names = set(header)
        missing = sorted(set(expected) - names - set(optional))
        extra = sorted(names - set(expected))
        if missing or extra:
            raise CacheDamaged(f"its tensors do not match the model: {len(missing)} missing (e.g. "
                               f"{(missing or ['-'])[0]}), {len(extra)} unexpected (e.g. {(extra or ['-'])[0]})")
        for name, meta in header.items():
            dtype, shape = expected[name]
            if DTYPES[meta["dtype"]] != dtype or tuple(meta["shape"]) != tuple(shape):
                raise CacheDamaged(f"{name} is {meta['dtype']} {meta['shape']} in the cache, the model wants "
                                   f"{NAMES.get(dtype, dtype)} {list(shape)}")
        storage = torch.UntypedStorage.from_file(str(path), False, size)  # private mapping: never written back
        if not isinstance(storage, torch.UntypedStorage):
            raise TypeError(f"torch mapped {path} as a {type(storage).__name__}")
        if VERIFY_DATA:
            crcs = manifest["files"][WEIGHTS].get("crc32")
            if not isinstance(crcs, list) or len(crcs) != -(-size // CRC_CHUNK):
                raise CacheDamaged("its manifest holds no usable checksums")
            bad = _first_bad_chunk(storage, size, crcs)
            if bad is not None:
                raise CacheDamaged(f"{WEIGHTS} has changed since it was written (checksum of bytes "
                                   f"{bad * CRC_CHUNK:,}-{min(size, (bad + 1) * CRC_CHUNK):,})")
        tensors: dict[str, torch.Tensor] = {}
        for name, meta in header.items():
            start, _ = meta["data_offsets"]
            tensors[name] = _mapped(storage, base + start, DTYPES[meta["dtype"]], tuple(meta["shape"]))
        return tensors

    # --- writing -------------------------------------------------------------------
    def write(self, key: str, parts: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
        """Store `tensors` under `key`; returns what happened, in a sentence for the log.
        Failures (disk full, a read-only folder) are reported, never raised: the model is
        loaded either way."""
        # Widest elements first, and a header padded to 8 bytes: every tensor then starts at
        # a multiple of its element size, so it can be mapped in place on reading. (No gaps:
        # the safetensors format allows none.)
        order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
        header: dict = {"__metadata__": {"format": "pt", "phi_demo_int4": key}}
        offset = 0
        for name in order:
            t = tensors[name]
            n = t.numel() * t.element_size()
            header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
            offset += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-(8 + len(blob)) % 8)
        size = 8 + len(blob) + offset
        if size > self.budget:
            return (f"int4 cache: not written — the entry would take {size / 1e9:.2f} GB, over the budget of "
                    f"{self.budget / 1e9:.2f} GB (--int4-cache-budget)")
        start = time.perf_counter()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._clean_temporaries()
            self._make_room(size, keep=key)
            free = shutil.disk_usage(self.root).free
            if free < size + DISK_MARGIN:
                return (f"int4 cache: not written — {size / 1e9:.2f} GB needed in {self.root}, "
                        f"{free / 1e9:.2f} GB free")
            tmp = self.root / f".tmp-{key}-{os.getpid()}-{os.urandom(4).hex()}"
            tmp.mkdir()
            try:
                crcs = _write_safetensors(tmp / WEIGHTS, blob, [tensors[n] for n in order])
                manifest = {"key": key, "quantizer_version": QUANTIZER_VERSION, "parts": parts,
                            "files": {WEIGHTS: {"bytes": size, "crc32": crcs}}, "written": time.time()}
                with open(tmp / MANIFEST, "w") as fh:
                    json.dump(manifest, fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.rename(tmp, self.entry(key))
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    return f"int4 cache: another process wrote {self.entry(key)} first; its entry is kept"
                _fsync_dir(self.root)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            return f"int4 cache: not written to {self.root}: {e}"
        return (f"int4 cache: wrote {self.entry(key)} ({size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s); "
                "the next start reads it")

    # --- the budget -----------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """This cache's entries, least recently used first. Only folders named like a key
        count: the root may be shared with other files, which are never touched."""
        out = []
        if not self.root.is_dir():
            return out
        for path in self.root.iterdir():
            if not (_KEY.fullmatch(path.name) and path.is_dir()):
                continue
            size, used = 0, None
            for f in path.iterdir():
                try:
                    st = f.stat()
                except OSError:
                    continue
                size += st.st_size
                if f.name == MANIFEST:
                    used = st.st_mtime
            if used is None:  # no manifest: damaged, the first to go
                used = 0.0
            out.append(Entry(path, size, used))
        return sorted(out, key=lambda e: e.last_used)

    def _make_room(self, size: int, keep: str) -> None:
        entries = [e for e in self.entries() if e.path.name != keep]
        used = sum(e.bytes for e in entries)
        for e in entries:
            if used + size <= self.budget:
                break
            log.info("int4 cache: removing %s (%.2f GB, least recently used) to stay within %.2f GB",
                     e.path, e.bytes / 1e9, self.budget / 1e9)
            self.remove(e.path)
            used -= e.bytes

    def _clean_temporaries(self) -> None:
        """Folders left by a write that did not finish: their process is gone, or they are old."""
        for path in self.root.iterdir():
            m = _TMP.fullmatch(path.name)
            if not m:
                continue
            pid = int(m.group("pid"))
            try:
                old = time.time() - path.stat().st_mtime > _STALE_TMP_S
            except OSError:
                continue
            if pid != os.getpid() and (old or not _alive(pid)):
                self.remove(path)

    def stale_for(self, identity: dict) -> list[dict]:
        """The parts of entries for the same checkpoint under other keys (another quantizer
        version, torch, dtype): why this load found none of its own."""
        found = []
        for e in self.entries():
            try:
                manifest = json.loads((e.path / MANIFEST).read_text())
            except (OSError, ValueError):
                continue
            parts = manifest.get("parts") if isinstance(manifest, dict) else None
            if isinstance(parts, dict) and parts.get("checkpoint") == identity:
                found.append(parts)
        return found

    @staticmethod
    def remove(path: Path) -> None:
        """Unlinking, never truncating: a process that has the file mapped keeps reading it."""
        shutil.rmtree(path, ignore_errors=True)


def describe_difference(old: dict, new: dict) -> str:
    """Which parts of a key changed, in words."""
    names = {"quantizer_version": "quantizer version", "torch": "torch version", "dtype": "compute dtype",
             "cpu_capability": "CPU kernel", "pack_block": "packed layout", "group_rule": "group rule",
             "quantized": "set of quantized layers"}
    changed = [f"{label} {old.get(k)} -> {new.get(k)}" if k not in ("group_rule", "quantized")
               else label for k, label in names.items() if old.get(k) != new.get(k)]
    return ", ".join(changed) or "another key"


def _check_header(path: Path, size: int) -> tuple[dict, int]:
    """The header of a safetensors file (without __metadata__) and where its data starts;
    CacheDamaged unless the offsets cover the data exactly, in order, aligned."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= min(size - 8, 256 << 20):
                raise CacheDamaged(f"{path.name} has no valid header (length {n:,})")
            header = json.loads(fh.read(n))
    except OSError as e:
        raise CacheDamaged(f"{path.name} cannot be read ({e})") from None
    except (ValueError, UnicodeDecodeError):
        raise CacheDamaged(f"{path.name}'s header is garbled") from None
    if not isinstance(header, dict):
        raise CacheDamaged(f"{path.name}'s header is garbled")
    header.pop("__metadata__", None)
    base = 8 + n
    try:
        spans = sorted((meta["data_offsets"][0], meta["data_offsets"][1], name, meta) for name, meta in header.items())
        at = 0
        for start, end, name, meta in spans:
            dtype = DTYPES[meta["dtype"]]
            count = 1
            for d in meta["shape"]:
                count *= int(d)
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if start != at or end - start != count * itemsize or (base + start) % itemsize:
                raise CacheDamaged(f"{path.name}'s header places {name} wrongly")
            at = end
    except (KeyError, TypeError, ValueError, IndexError):
        raise CacheDamaged(f"{path.name}'s header is garbled") from None
    if base + at != size:
        raise CacheDamaged(f"{path.name} holds {size:,} bytes, its header describes {base + at:,}")
    return header, base


def _write_safetensors(path: Path, header: bytes, tensors: list[torch.Tensor]) -> list[int]:
    """Write the file straight from the tensors' memory (no serialized copy of 4 GB, as
    safetensors' save_file would make) and return the CRC32 of each CRC_CHUNK bytes."""
    crc = _ChunkCrc()
    with open(path, "wb") as fh:
        for piece in (len(header).to_bytes(8, "little"), header):
            fh.write(piece)
            crc.update(memoryview(piece))
        for t in tensors:
            if t.numel() == 0:
                continue
            data = memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
            fh.write(data)
            crc.update(data)
        fh.flush()
        os.fsync(fh.fileno())  # before the rename: a crash must not leave a right-sized file of zeros
    return crc.done()


class _ChunkCrc:
    def __init__(self) -> None:
        self.crcs: list[int] = []
        self.crc = 0
        self.fill = 0

    def update(self, data: memoryview) -> None:
        while len(data):
            take = min(CRC_CHUNK - self.fill, len(data))
            self.crc = zlib.crc32(data[:take], self.crc)
            self.fill += take
            data = data[take:]
            if self.fill == CRC_CHUNK:
                self.crcs.append(self.crc)
                self.crc = self.fill = 0

    def done(self) -> list[int]:
        if self.fill:
            self.crcs.append(self.crc)
        return self.crcs


def _mapped(storage: torch.UntypedStorage, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor over `storage` from byte `offset` (nothing is copied)."""
    t = torch.empty(0, dtype=dtype)
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return t.set_(storage, offset // t.element_size(), shape, tuple(strides))


def _first_bad_chunk(storage: torch.UntypedStorage, size: int, crcs: list[int]) -> int | None:
    """The index of the first CRC_CHUNK whose CRC differs, or None. zlib releases the GIL on
    large buffers, so the chunks are checked on all cores."""
    data = _mapped(storage, 0, torch.uint8, (size,)).numpy()

    def check(i: int) -> bool:
        return zlib.crc32(data[i * CRC_CHUNK:(i + 1) * CRC_CHUNK].data) == crcs[i]

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        ok = list(pool.map(check, range(len(crcs))))
    return next((i for i, good in enumerate(ok) if not good), None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def from_settings(settings: AppSettings) -> Int4Cache | None:
    """The cache `--int4-cache`/`--int4-cache-budget` ask for; None when switched off.
    SettingError for a budget that is not a size."""

    where = settings.int4_cache
    if where is not None and where.strip().lower() == "off":
        return None
    try:
        budget = parse_size(settings.int4_cache_budget)
    except ValueError:
        raise SettingError(f"int4_cache_budget = {settings.int4_cache_budget!r}: must be a size such as "
                           "8gb or 16gb (0 turns the cache off).") from None
    if budget <= 0:
        return None
    return Int4Cache(Path(where).expanduser() if where else cache_root() / "int4", budget)
