"""A real S3 endpoint for tests: moto's server on 127.0.0.1 at a free port, started and stopped
by the fixture (a child process, so Ray workers and CLI subprocesses reach it over HTTP)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Iterator

# The test extra installs moto[server] and s3fs: a broken install fails here, it does not skip.
import moto.server  # noqa: F401
import pytest
import s3fs

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL; AWS_* variables point every s3fs client (ours and children) at it."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=url)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3(endpoint: str):
    """A fresh s3fs client (no listing cache carried between checks)."""
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def pending_uploads(fs, bucket: str) -> list[dict]:
    return fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])


class HoldingProxy:
    """A TCP relay in front of the S3 endpoint that holds the first request whose request line
    matches `pattern` (e.g. the first UploadPart of one object): that request never reaches the
    store, so its sender stays blocked mid-upload, at a known point, until it is killed.
    `held` is set once it has happened. Every other byte is relayed as is."""

    def __init__(self, endpoint: str, pattern: bytes) -> None:
        import re
        import threading
        self.upstream = endpoint.removeprefix("http://").split(":")
        self.pattern = re.compile(pattern)
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            server = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _claim(self, seen: bytes) -> bool:
        with self._lock:
            if self.held.is_set() or not self.pattern.search(seen):
                return False
            self.held.set()
            return True

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        tail = b""
        while data := _recv(client):
            if self._claim(tail + data):
                while _recv(client):  # hold: read and drop until the sender goes away
                    pass
                break
            tail = (tail + data)[-512:]
            server.sendall(data)
        _close(client, server)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        while data := _recv(source):
            try:
                sink.sendall(data)
            except OSError:
                break
        _close(source, sink)

    def close(self) -> None:
        self._server.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
