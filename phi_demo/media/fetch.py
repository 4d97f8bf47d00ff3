"""Fetch an image or audio file named by URL for the command line: http(s) only, a size cap,
a timeout, no loopback or private addresses unless allowed, cached by content hash."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx

from phi_demo.errors import UserInputError

MAX_BYTES = 50 * 1024 * 1024
TIMEOUT_S = 30.0
MAX_REDIRECTS = 5


def is_url(s: str) -> bool:
    return "://" in s


def _check_host(host: str, allow_private: bool) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise UserInputError(f"Cannot resolve host {host!r}: {e.strerror}.") from None
    if allow_private:
        return
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # an IPv6 address may end in %scope
        if not ip.is_global or ip.is_multicast:
            raise UserInputError(
                f"Refusing to fetch from {host} ({ip}): it is a loopback, private or reserved address. "
                "Pass --allow-private-urls to allow it."
            )


def _check_url(url: str, allow_private: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise UserInputError(f"Only http and https URLs can be fetched, not {parsed.scheme or 'a bare path'}: {url}")
    if not parsed.hostname:
        raise UserInputError(f"The URL has no host: {url}")
    _check_host(parsed.hostname, allow_private)


def fetch(url: str, cache_dir: str | os.PathLike[str], max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT_S,
          allow_private: bool = False) -> Path:
    """Download `url` (or reuse an earlier download) and return the local file."""

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index = cache_dir / "index.json"
    known = json.loads(index.read_text()) if index.exists() else {}
    if url in known and (cache_dir / known[url]).exists():
        return cache_dir / known[url]

    current = url
    # Redirects are followed by hand so that each hop's address is checked.
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _check_url(current, allow_private)
            try:
                with client.stream("GET", current) as resp:
                    if resp.is_redirect:
                        current = urljoin(current, resp.headers.get("location", ""))
                        continue
                    if resp.status_code != 200:
                        raise UserInputError(f"{url}: the server answered HTTP {resp.status_code}.")
                    declared = int(resp.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise UserInputError(f"{url}: the file is {declared / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.")
                    body = bytearray()
                    for chunk in resp.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise UserInputError(f"{url}: the file is larger than the {max_bytes / 1e6:.0f} MB limit.")
                    break
            except httpx.TimeoutException:
                raise UserInputError(f"{url}: no answer within {timeout:g} s.") from None
            except httpx.HTTPError as e:
                raise UserInputError(f"{url}: the download failed ({e}).") from None
        else:
            raise UserInputError(f"{url}: more than {MAX_REDIRECTS} redirects.")

    suffix = Path(urlparse(current).path).suffix.lower()[:8]
    name = hashlib.sha256(body).hexdigest() + suffix
    path = cache_dir / name
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(body)
        tmp.replace(path)
    known[url] = name
    index.write_text(json.dumps(known, indent=1))
    return path
