"""A loopback HTTP server for download tests (127.0.0.1, a free port, bounded waits).

It serves ``server.files`` (path with query -> bytes) and can serve byte ranges, cut a connection
midway, stall, answer 404 or a web page, or answer like Google Drive does for a file too large to
virus-scan: a confirmation page whose download form leads to the file (mode ``drive``).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_S = 10  # the longest a stalled answer waits for ``server.release``

# Google Drive's "can't scan this file for viruses" page, as of 2024-2026 (shortened): a GET
# form to drive.usercontent.google.com/download with hidden id, export, confirm and uuid inputs
DRIVE_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan
this file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size">
<a href="/open?id={id}">{name}</a> (240M)</span> is too large for Google to scan for viruses.
Would you still like to download this file?</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action"
 value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}">
</form></div></div></body></html>"""
DEFAULT_PAGE = b"<html><body>Virus scan warning: confirm download</body></html>"
DRIVE_UUID = "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc"


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.modes[path]`` picks a misbehaviour."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        ranged = self.headers.get("Range")
        server.requests.append((self.path, ranged))
        mode = server.modes.get(self.path, "ok")
        if mode == "drive":
            self._drive_page()
            return
        if self.path not in server.files or mode == "404":
            self.send_error(404, "Not Found")
            return
        if server.cookies.get(self.path) and server.cookies[self.path] not in (
            self.headers.get("Cookie") or ""
        ):
            self.send_error(403, "Forbidden: no cookie from the confirmation page")
            return
        if mode == "stall-headers":
            server.release.wait(STALL_S)
            return
        if mode == "html":
            page = server.pages.get(self.path, DEFAULT_PAGE)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        data = server.files[self.path]
        start = 0
        if ranged and mode != "ignore-range":
            start = int(re.fullmatch(r"bytes=(\d+)-", ranged)[1])
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.cut_at.pop(self.path, None)  # cut (or stall) once, at this absolute byte
        if cut is not None and cut > start:
            self.wfile.write(body[: cut - start])
            self.wfile.flush()
            if mode == "stall-body":
                server.release.wait(STALL_S)
            return  # HTTP/1.0: returning closes the connection, short of Content-Length
        self.wfile.write(body)

    def _drive_page(self) -> None:
        """The confirmation page; its form leads to ``/download?id=...&confirm=t&uuid=...``."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        file_id = query.get("id", ["?"])[0]
        page = DRIVE_PAGE.format(
            id=file_id, name=f"{file_id}.pt", action=self.server.url("/download"), uuid=DRIVE_UUID
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Set-Cookie", f"download_warning_{file_id}=seen; Path=/")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.cut_at: dict[str, int] = {}
        self.pages: dict[str, bytes] = {}  # path -> the web page of mode "html"
        self.cookies: dict[str, str] = {}  # path -> a cookie its request must carry
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def drive(self, file_id: str, data: bytes) -> str:
        """Serve ``data`` the way Google Drive serves a large file; the URL to give a client."""
        page = f"/uc?export=download&id={file_id}"
        target = f"/download?id={file_id}&export=download&confirm=t&uuid={DRIVE_UUID}"
        self.modes[page] = "drive"
        self.files[target] = data
        self.cookies[target] = f"download_warning_{file_id}=seen"
        return self.url(page)


def start() -> tuple[Server, threading.Thread]:
    """A running server and its thread (:func:`stop` ends both)."""
    server = Server()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server, thread


def stop(server: Server, thread: threading.Thread) -> None:
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)
