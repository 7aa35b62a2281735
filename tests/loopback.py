"""Servers on the loopback address for download tests (files over HTTP, and S3): no test reaches the internet.

``LoopbackServer.files`` maps URL paths to bytes; every request is recorded in ``requests`` as (method, path).
``truncate`` holds paths whose body is cut in half after announcing the full ``Content-Length`` (a dropped
connection). ``answers`` maps paths to functions that write the whole answer on the request handler (a hostile or
broken server: wrong headers, an endless or dripping body). Paths under ``<repo>/resolve/<revision>/`` answer
with the headers huggingface_hub reads (commit, ETag), so ``HF_ENDPOINT`` can point at the server.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Callable


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?")[0]
        owner.requests.append((self.command, path))
        if path in owner.answers:
            owner.answers[path](self)
            self.close_connection = True
            return
        body = owner.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if "/resolve/" in path:
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()
        if send_body:
            self.wfile.write(body[: len(body) // 2] if path in owner.truncate else body)
            if path in owner.truncate:
                self.close_connection = True

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer


class LoopbackServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.answers: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def gets(self, path: str) -> int:
        """How many times ``path`` was downloaded (GET requests)."""
        return sum(1 for method, p in self.requests if method == "GET" and p == path)


class LoopbackS3:
    """An S3 service on the loopback address (moto's server mode), for ``AWS_ENDPOINT_URL``."""

    def __init__(self) -> None:
        import logging
        import socket

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> LoopbackS3:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
