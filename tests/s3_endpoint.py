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
import s3fs  # noqa: F401

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
    import s3fs
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def pending_uploads(fs, bucket: str) -> list[dict]:
    return fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
