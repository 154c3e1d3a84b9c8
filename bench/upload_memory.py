"""Memory of the API process while azure-storage-blob uploads a large file to a local upload URL.

    .venv/bin/python bench/upload_memory.py [--size-mib 1024] [--concurrency 1,4]

Starts the API as `make up` does (`python -m shared.hosting run api`) with the embedded default under a
temporary SPEECHFLOW_HOME, writes a file of random bytes, and uploads it with `BlobClient.upload_blob`
(its defaults: 4 MiB blocks above 64 MiB, Put Block then Put Block List) once per concurrency. The
API's resident memory is sampled every 20 ms; printed per upload: time, throughput, the API's RSS
before, its peak during the upload and the difference, and whether the stored blob matches.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from azure.storage.blob import BlobClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.core.config import Settings  # noqa: E402
from shared.storage.local import LocalBlobStore  # noqa: E402

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            digest.update(chunk)
            file.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


class PeakRss:
    """Samples a process's resident set size in a thread until stopped; keeps the highest."""

    def __init__(self, process: psutil.Process, interval: float = 0.02) -> None:
        self.peak = process.memory_info().rss
        self._process = process
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def wait_until_up(base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API exited with status {server.returncode}")
        try:
            httpx.get(f"{base_url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the API did not start within 60 s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the uploaded file (default 1 GiB)")
    parser.add_argument("--concurrency", default="1,4", help="max_concurrency values to try, comma-separated")
    args = parser.parse_args(argv)
    size = args.size_mib * MIB

    with tempfile.TemporaryDirectory(prefix="upload-memory-") as scratch:
        home = Path(scratch) / "home"
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "SPEECHFLOW_HOME": str(home),
            "SPEECHFLOW_PUBLIC_URL": base_url,
            "API_PORT": str(port),
            "MAX_UPLOAD_BYTES": str(max(size, 1024 * MIB)),
        }
        settings = Settings(speechflow_home=home, public_base_url=base_url, max_upload_bytes=max(size, 1024 * MIB))
        store = LocalBlobStore(settings)  # signs with the key the API reads from the same home

        source = Path(scratch) / "upload.bin"
        started = time.perf_counter()
        expected = write_random_file(source, size)
        print(f"wrote {args.size_mib} MiB of random bytes in {time.perf_counter() - started:.1f} s")

        server = subprocess.Popen(
            [sys.executable, "-m", "shared.hosting", "run", "api"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(base_url, server)
            api = psutil.Process(server.pid)
            print(f"API pid {server.pid} at {base_url}; RSS after start {api.memory_info().rss / MIB:.0f} MiB")
            for concurrency in (int(value) for value in args.concurrency.split(",")):
                blob = f"bench/upload-{concurrency}.bin"
                url, _ = store.upload_url(settings.audio_container, blob)
                before = api.memory_info().rss
                started = time.perf_counter()
                with PeakRss(api) as rss, source.open("rb") as data:
                    result = BlobClient.from_blob_url(url).upload_blob(data, max_concurrency=concurrency)
                elapsed = time.perf_counter() - started
                matches = sha256_of(store.path(settings.audio_container, blob)) == expected
                blocks = len(store.committed_blocks(settings.audio_container, blob))
                print(
                    f"max_concurrency={concurrency}: {elapsed:.1f} s, {args.size_mib / elapsed:.0f} MiB/s, "
                    f"{blocks} blocks; API RSS before {before / MIB:.0f} MiB, peak {rss.peak / MIB:.0f} MiB "
                    f"(+{(rss.peak - before) / MIB:.0f} MiB); stored blob matches: {matches}; etag {result['etag']}"
                )
                store.delete(settings.audio_container, blob)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
