"""Run the ``tritonserver`` binary that the nvidia-pytriton wheel carries, on this machine.

There is no usable Triton server package on PyPI, but the nvidia-pytriton wheel bundles a
real ``tritonserver`` (2.45 in 0.5.7) with its Python backend. This module finds it,
prepares a backend directory of the project's own (never writing into site-packages),
starts it on 127.0.0.1 in explicit model-control mode, waits until the requested models
are ready and stops it cleanly. A GPU fleet or NVIDIA's container is used through
``--url`` instead; nothing here is needed there.

Traps handled here (see ../shared/docs/platform-notes.md):
- the Python-backend stub embeds Debian's libpython3.11 and IGNORES PYTHONPATH, so the
  launcher passes the interpreter's site-packages and the source root in
  ``ONEPIECE_PYTHONPATH``, which ``model.py`` adds to ``sys.path``;
- the stub must sit beside ``libtriton_python.so`` in the backend directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from onepiece.errors import UserError

#: Environment variable through which the launcher hands the stub its import paths.
PYTHONPATH_ENV = "ONEPIECE_PYTHONPATH"
CACHE_ENV = "ONEPIECE_CACHE"
_STUB_LIBPYTHON = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
_PY_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonServerConfig:
    """How to start the embedded server. Ports 0 mean "pick a free port"."""

    model_repository: Path
    models: tuple[str, ...] = ("onepiece_ranker",)
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"
    startup_timeout_s: float = 120.0
    # Triton waits this long for in-flight requests at shutdown before giving up.
    exit_timeout_s: int = 10
    log_file: Path | None = None  # default: a file in a fresh temporary directory
    log_verbose: int = 0
    cache_dir: Path | None = None  # backend copy; default $ONEPIECE_CACHE or <repo>/.cache
    # Ask the kernel to SIGTERM the server when the launching thread dies, so a killed
    # test run or CLI never leaves an orphan server behind (Linux only).
    die_with_parent: bool = True
    extra_args: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TritonInstallation:
    """Where the wheel's server pieces live."""

    binary: Path
    python_backend: Path  # directory with libtriton_python.so
    stub: Path  # python_backend_stubs/<py>/triton_python_backend_stub
    libs: Path  # nvidia_pytriton.libs (the binary's shared libraries)


def locate_triton() -> TritonInstallation:
    """Find tritonserver, the Python backend and its stub inside the nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "tritonserver not found: the nvidia-pytriton wheel (which bundles the binary) is "
            "not installed in this environment; run `make setup`, or pass --url to use an "
            "existing Triton server"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    found = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / _PY_TAG / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    for what, path in (
        ("tritonserver binary", found.binary),
        ("Python backend", found.python_backend / "libtriton_python.so"),
        (f"Python {_PY_TAG} backend stub", found.stub),
        ("server libraries", found.libs),
    ):
        if not path.exists():
            raise UserError(f"{what} not found at {path} (nvidia-pytriton wheel incomplete?)")
    return found


def check_stub_libpython(install: TritonInstallation) -> None:
    """Fail clearly when the stub's embedded libpython (Debian libpython3.11) is missing."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(install.libs)}
    ldd = shutil.which("ldd")
    if ldd:
        out = subprocess.run([ldd, str(install.stub)], capture_output=True, text=True, env=env)
        missing = [line.split()[0] for line in out.stdout.splitlines() if "not found" in line]
        if not missing:
            return
    else:
        try:
            ctypes.CDLL(_STUB_LIBPYTHON)
            return
        except OSError:
            missing = [_STUB_LIBPYTHON]
    raise UserError(
        f"the Triton Python backend stub {install.stub} cannot load {', '.join(missing)}: "
        f"install the Debian package libpython{_PY_TAG} (apt-get install libpython{_PY_TAG})"
    )


def default_cache_dir() -> Path:
    """$ONEPIECE_CACHE, else ``.cache`` in the source checkout (git-ignored)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / ".cache"


def prepare_backend_dir(install: TritonInstallation, cache_dir: Path) -> Path:
    """A backend directory of our own: ``<dir>/python/`` with the backend and its stub.

    Keyed by the source files' sizes and mtimes, built in a staging directory and renamed
    into place, so parallel launchers never see a half-copied backend.
    """
    sources = [
        install.python_backend / "libtriton_python.so",
        install.python_backend / "triton_python_backend_utils.py",
        install.stub,
    ]
    key = hashlib.sha256(
        "".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in sources).encode()
    ).hexdigest()[:12]
    final = cache_dir / "triton-backends" / f"py{_PY_TAG}-{key}"
    if (final / "python" / "triton_python_backend_stub").exists():
        return final
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
    (staging / "python").mkdir(parents=True)
    for src in sources:
        shutil.copy2(src, staging / "python" / src.name)
    try:
        os.rename(staging, final)
    except OSError:  # another launcher won the race: its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return final


def stub_pythonpath() -> str:
    """Import paths for the stub: the source root this module was imported from, then this
    interpreter's site-packages. The source root goes first so that the server runs the
    same code as its launcher, even when site-packages holds (or an editable install
    points at) another checkout."""
    import site

    paths = [str(Path(__file__).resolve().parents[2])]
    paths += list(site.getsitepackages())
    return os.pathsep.join(dict.fromkeys(paths))


def check_model_repository(repo: Path, models: tuple[str, ...]) -> None:
    """Each requested model needs a config.pbtxt and at least one numbered version."""
    if not repo.is_dir():
        raise UserError(f"model repository {repo} does not exist")
    for name in models:
        config = repo / name / "config.pbtxt"
        if not config.is_file():
            raise UserError(f"model {name!r} is missing from {repo}: no {config}")
        versions = [p for p in (repo / name).iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            raise UserError(
                f"model {name!r} in {repo} has no version directory (run `onepiece export`)"
            )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _kill_process_group(pgid: int) -> None:
    """SIGKILL what is left of a stopped server's process group.

    The server leads its own group (``start_new_session``) and its Python-backend stubs
    share it. A stub whose server died in the middle of a request can block for good on
    the shared-memory state the server held, and outlive it as an orphan; the kernel keeps
    a group id from being reused while a member lives, so this reaches only those orphans.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class TritonServer:
    """One running ``tritonserver`` process. Use :func:`embedded_triton` in code."""

    def __init__(self, config: TritonServerConfig) -> None:
        self.config = config
        self.install = locate_triton()
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = config.http_port or free_port(config.host)
        self.grpc_port = config.grpc_port or free_port(config.host)
        self.metrics_port = config.metrics_port or free_port(config.host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_file = config.log_file
        if self.log_file is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="onepiece-triton-")
            self.log_file = Path(self._tmp.name) / "tritonserver.log"

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.metrics_port}/metrics"

    def command(self, backend_dir: Path) -> list[str]:
        cfg = self.config
        cmd = [
            str(self.install.binary),
            f"--model-repository={Path(cfg.model_repository).resolve()}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            f"--http-address={cfg.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={cfg.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={cfg.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={cfg.exit_timeout_s}",
            f"--log-verbose={cfg.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in cfg.models]
        return cmd + list(cfg.extra_args)

    def start(self) -> TritonServer:
        cfg = self.config
        check_model_repository(Path(cfg.model_repository), cfg.models)
        check_stub_libpython(self.install)
        backend_dir = prepare_backend_dir(self.install, cfg.cache_dir or default_cache_dir())
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in (str(self.install.libs), os.environ.get("LD_LIBRARY_PATH", "")) if p
            ),
            PYTHONPATH_ENV: stub_pythonpath(),
            **cfg.extra_env,
        }
        assert self.log_file is not None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self.command(backend_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # our signal handling decides when it stops
                preexec_fn=_die_with_parent if cfg.die_with_parent else None,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self) -> None:
        """Block until the server and every requested model are ready."""
        deadline = time.monotonic() + self.config.startup_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise UserError(
                    f"tritonserver exited with code {code} while starting "
                    f"(repository {self.config.model_repository}):\n{self.log_errors()}"
                )
            if self._ready("/v2/health/ready") and all(
                self._ready(f"/v2/models/{name}/ready") for name in self.config.models
            ):
                return
            time.sleep(0.25)
        raise UserError(
            f"tritonserver was not ready after {self.config.startup_timeout_s:.0f}s "
            f"(log {self.log_file}):\n{self.log_errors()}"
        )

    def log_errors(self, lines: int = 12) -> str:
        """The server log's error lines (or its tail), for messages."""
        try:
            text = Path(self.log_file or "").read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        # Triton marks errors with a leading "E"; skip the harmless CUDA complaints of a
        # machine without a GPU.
        errors = [
            line
            for line in text
            if line.startswith("E") and "Cuda" not in line and "CUDA" not in line
        ]
        return "\n".join((errors or text)[-lines:])

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM, wait for a clean exit (in-flight requests finish), then SIGKILL.

        Whatever the server leaves of its process group (Python-backend stubs) is killed too.
        """
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s if timeout_s is not None else self.config.exit_timeout_s + 5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            _kill_process_group(process.pid)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """Kill the server abruptly (tests: a server that dies in the middle of a job)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            _kill_process_group(self.process.pid)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_triton(config: TritonServerConfig) -> Iterator[TritonServer]:
    """Start the bundled tritonserver, yield it when its models are ready, always stop it."""
    server = TritonServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
