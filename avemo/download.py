"""Resumable HTTP downloads that follow file hosts' "large file" confirmation pages.

:func:`fetch` brings a ``.part`` file to the whole file, resuming with a ``Range`` request where
the server allows it; a Google Drive style confirmation page (a download form, a ``confirm=``
link or a ``downloadUrl``) is followed the way a browser (or ``gdown``) does, cookies kept. The
weights cache (:mod:`avemo.hub`) decides what to download, where, and verifies it.
"""

from __future__ import annotations

import html.parser
import http.client
import http.cookiejar
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from avemo import __version__

log = logging.getLogger("avemo")

CHUNK_SIZE = 1 << 20  # bytes per read while downloading
MAX_CONFIRMATIONS = 2  # "large file" confirmation pages followed per request
MAX_PAGE_BYTES = 1 << 20  # bytes of a web page read to find its download form


class Cut(Exception):
    """The connection dropped or stalled mid-file; the ``.part`` file is kept for resuming."""


class Failed(Exception):
    """This URL cannot deliver the file (unreachable, HTTP error, a web page instead)."""


class RangeRefused(Failed):
    """HTTP 416: the partial file does not fit what the server has; start over."""


def _unreachable(url: str, reason: object) -> Failed:
    host = urllib.parse.urlsplit(url).hostname
    return Failed(f"cannot reach {host} (offline? {reason})")


def _open(
    url: str, offset: int, timeout: float, opener: urllib.request.OpenerDirector | None = None
) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"avemo/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        if opener is not None:
            return opener.open(request, timeout=timeout)
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            raise RangeRefused(f"HTTP 416 for bytes {offset}- of {url}") from None
        raise Failed(f"HTTP {error.code} {error.reason} from {url}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise Failed(f"no answer from {url} within {timeout:g} s") from None
        raise _unreachable(url, error.reason) from None
    except TimeoutError:
        raise Failed(f"no answer from {url} within {timeout:g} s") from None
    except (ConnectionError, http.client.HTTPException, OSError) as error:
        raise _unreachable(url, error) from None


class _PageForms(html.parser.HTMLParser):
    """The forms (id, action, named inputs) and links of a web page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._form = {"id": found.get("id"), "action": found.get("action"), "inputs": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and found.get("name"):
            if found.get("type", "").lower() == "hidden":  # what a submit sends as it is
                self._form["inputs"].append((found["name"], found.get("value", "")))
        elif tag == "a" and found.get("href"):
            self.links.append(found["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def confirmation_url(page: str, url: str) -> str | None:
    """Where a file host's "large file" confirmation page leads, or None if it offers no way on.

    Google Drive answers a file it cannot virus-scan with a page whose form
    (``id="download-form"``, GET, hidden inputs ``id``, ``export``, ``confirm``, ``uuid``) leads
    to the file; older pages link to ``/uc?export=download&confirm=TOKEN&id=...`` instead, or
    carry a ``"downloadUrl"`` in their JSON. The form is submitted with its hidden inputs; links
    are resolved against ``url``.
    """
    parser = _PageForms()
    try:
        parser.feed(page)
        parser.close()
    except Exception:  # a broken page: no way on
        return None
    for form in parser.forms:
        names = {name for name, _ in form["inputs"]}
        if form["id"] == "download-form" or "confirm" in names:
            action = urllib.parse.urljoin(url, form["action"] or url)
            query = urllib.parse.urlencode(form["inputs"])
            joiner = "&" if urllib.parse.urlsplit(action).query else "?"
            return f"{action}{joiner}{query}" if query else action
    for href in parser.links:
        if "confirm=" in href and "export=download" in href:
            return urllib.parse.urljoin(url, href)
    found = re.search(r'"downloadUrl":"([^"]+)"', page)
    if found:
        try:
            return json.loads(f'"{found[1]}"')  # \u003d-style escapes
        except json.JSONDecodeError:
            return None
    return None


def _page_reason(page: str) -> str:
    """What a file host's web page says went wrong (Drive's error caption), if anything."""
    found = re.search(r'class="uc-error-subcaption"[^>]*>(.*?)<', page, flags=re.S)
    if found and found[1].strip():
        return found[1].strip()
    return "a file host asking for a confirmation or a login"


def _open_file(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """``url`` opened for the file's bytes from ``offset``, following up to
    :data:`MAX_CONFIRMATIONS` confirmation pages (cookies kept across them, as a browser does)."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    current = url
    for _ in range(MAX_CONFIRMATIONS + 1):
        response = _open(current, offset, timeout, opener)
        if response.headers.get_content_type() != "text/html":
            return response
        with response:
            try:
                raw = response.read(MAX_PAGE_BYTES)
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                raise Failed(f"{url}: web page unreadable ({type(error).__name__})") from None
        page = raw.decode(response.headers.get_content_charset() or "utf-8", "replace")
        following = confirmation_url(page, current)
        if following is None or urllib.parse.urlsplit(following).scheme not in {"http", "https"}:
            raise Failed(f"{url} answered with a web page, not the file ({_page_reason(page)})")
        log.info("%s: following the file host's confirmation page", url)
        current = following
    raise Failed(f"{url}: more than {MAX_CONFIRMATIONS} confirmation pages, not the file")


def _content_range_start(response: http.client.HTTPResponse) -> tuple[int, int | None] | None:
    """(start, total) from a 206's ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not match:
        return None
    return int(match[1]), None if match[2] == "*" else int(match[2])


def fetch(
    url: str,
    part: Path,
    *,
    size: int | None = None,
    name: str = "",
    timeout: float,
    progress: bool | None,
) -> None:
    """Bring the file ``part`` to the complete file from ``url``, resuming what is there.

    ``size`` (None: unknown) is checked against what the server says and sends. Raises
    :class:`Cut` when the connection drops or stalls (``part`` kept for resuming) and
    :class:`Failed` when this URL cannot deliver the file.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        if offset == size:
            return  # complete already (interrupted before the rename); the hash decides
        part.unlink()
        offset = 0
    try:
        response = _open_file(url, offset, timeout)
    except RangeRefused:
        part.unlink()
        offset = 0
        response = _open_file(url, 0, timeout)
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and response.status == 206:
            start, total = _content_range_start(response) or (None, None)
            if start != offset:
                raise Failed(f"{url} resumed at the wrong offset ({start}, expected {offset})")
        else:
            offset, total = 0, length
        if size is not None and total is not None and total != size:
            raise Failed(f"{url} serves {total} bytes, the manifest says {size}")
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                disable=None if progress is None else not progress,
                leave=False,
            ) as bar,
        ):
            received = offset
            try:
                while chunk := response.read1(CHUNK_SIZE):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if size is not None and received > size:
                        out.close()
                        part.unlink()
                        raise Failed(f"{url} sent more than the {size} bytes expected")
            except TimeoutError:
                raise Cut(f"no data for {timeout:g} s") from None
            except (http.client.IncompleteRead, ConnectionError, OSError) as error:
                raise Cut(f"connection lost ({type(error).__name__})") from None
        if total is not None and received < total:
            raise Cut(f"connection closed after {received} of {total} bytes")
