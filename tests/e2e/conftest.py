"""Shared fixtures for the end-to-end suite: the real vitserve binary, started on free ports.

The binaries come from $VITSERVE_BUILD_DIR/bin (scripts/test.sh sets it; default: build/).
"""
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD_DIR = pathlib.Path(os.environ.get("VITSERVE_BUILD_DIR", ROOT / "build"))
BIN_DIR = BUILD_DIR / "bin"
DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
# A small model keeps the suite fast on two CPU cores.
E2E_MODEL = os.environ.get("VITSERVE_E2E_MODEL", "deit_tiny_patch16_224")


def binary(name: str) -> pathlib.Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build first (scripts/setup.sh)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_post(url: str, data: bytes = b"", content_type: str = "application/octet-stream",
              timeout: float = 120):
    """POSTs `data` to `url`; (HTTP status, body). Raises urllib.error.HTTPError on 4xx/5xx."""
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return reply.status, reply.read()


def add_model(repo: pathlib.Path, name: str, config: str) -> None:
    """Writes <repo>/<name>/config.pbtxt (a model of a Triton-style repository)."""
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config + "\n")


# A classifier that loads in a fraction of a second on CPU (64 px; 6.3 M parameters per instance).
SMALL_CLASSIFIER = ('architecture: "shvit_s1" num_classes: 10 allow_random_weights: true '
                    'input { size: 64 }')


def sample_images():
    images = sorted(p for p in DATA_DIR.iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))
    assert images, f"no sample images in {DATA_DIR}"
    return images


class ServerProcess:
    """A running vitserve; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, args, log_path):
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.rest_port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "w")
        cmd = [str(binary("vitserve")), f"--grpc-port={self.grpc_port}",
               f"--http-port={self.http_port}", f"--rest-port={self.rest_port}",
               "--host=127.0.0.1", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    def http_get(self, path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return pathlib.Path(self.log_path).read_text()

    def wait_ready(self, timeout_s: float = 120.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vitserve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http_get("/v2/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"vitserve not ready after {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def serving(args, log_path):
    """A ready vitserve with `args` for the `with` block, stopped after it."""
    proc = ServerProcess(list(args), log_path)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One vitserve for the whole session, serving E2E_MODEL with random weights on CPU."""
    log = tmp_path_factory.mktemp("server") / "vitserve.log"
    with serving([f"--model={E2E_MODEL}", "--max-batch-size=8"], log) as proc:
        yield proc


@pytest.fixture
def start_server(tmp_path):
    """Factory for tests that need their own server (shutdown, repository, errors)."""
    started = []

    def start(*args, wait=True):
        proc = ServerProcess(list(args), tmp_path / f"vitserve{len(started)}.log")
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()
