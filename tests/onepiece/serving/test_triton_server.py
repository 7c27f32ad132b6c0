"""The embedded tritonserver: starts for real, serves, stops, and fails with clear messages."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import write_doubling_model

from onepiece.errors import UserError
from onepiece.serving.server import (
    TritonServerConfig,
    check_stub_libpython,
    embedded_triton,
    locate_triton,
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_server_serves_and_stops(doubler_repo: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    config = TritonServerConfig(doubler_repo, models=("doubler",))
    with embedded_triton(config) as server:
        pid = server.process.pid
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(grpc.infer("doubler", [inp]).as_numpy("y"), 2 * x)
        http = httpclient.InferenceServerClient(server.http_url)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(http.infer("doubler", [inp]).as_numpy("y"), 2 * x)
        # explicit model control: only the requested model is loaded
        assert [m["name"] for m in http.get_model_repository_index() if m.get("state")] == [
            "doubler"
        ]
        ports = (server.http_port, server.grpc_port, server.metrics_port)
        assert len(set(ports)) == 3
        assert all(_port_open(p) for p in ports)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not any(_port_open(p) for p in ports)


def _process_group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # exited while we looked
            continue
        if int(group) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("ending", ["stop", "kill"])
def test_nothing_the_server_started_outlives_it(tmp_path: Path, ending: str) -> None:
    # The model's stub starts a long-lived helper of its own, as a stub blocked on the
    # dead server's shared memory would be: both must go when the server goes.
    helper_pid = tmp_path / "helper.pid"
    spawn = (
        f'import subprocess; from pathlib import Path; '
        f'Path("{helper_pid}").write_text(str(subprocess.Popen(["sleep", "600"]).pid))'
    )
    repo = write_doubling_model(tmp_path / "model_repo", init=spawn)
    with embedded_triton(TritonServerConfig(repo, models=("doubler",))) as server:
        pgid = server.process.pid
        helper = int(helper_pid.read_text())
        members = _process_group(pgid)
        assert pgid in members and helper in members and len(members) >= 3  # server, stub, helper
        if ending == "kill":
            server.kill()
    try:
        deadline = time.monotonic() + 10
        while _process_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _process_group(pgid) == [], f"left running after the server {ending}: {_process_group(pgid)}"
    finally:
        for pid in _process_group(pgid):
            os.kill(pid, signal.SIGKILL)


def test_missing_model_is_named_before_starting(doubler_repo: Path) -> None:
    config = TritonServerConfig(doubler_repo, models=("onepiece_ranker",))
    with pytest.raises(UserError, match=r"model 'onepiece_ranker' is missing from .*model_repo"):
        with embedded_triton(config):
            pass


def test_the_stub_imports_the_launchers_own_checkout_first() -> None:
    # A worktree run with the venv of another checkout (whose editable install points
    # there) must serve its own model code.
    import onepiece
    from onepiece.serving.server import stub_pythonpath

    first = Path(stub_pythonpath().split(os.pathsep)[0])
    assert Path(onepiece.__file__).resolve().is_relative_to(first)
    assert (first / "onepiece" / "serving" / "triton_model.py").is_file()


def test_missing_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model repository .*nowhere does not exist"):
        with embedded_triton(TritonServerConfig(tmp_path / "nowhere")):
            pass


def test_model_that_fails_to_load_reports_the_server_error(broken_doubler_repo: Path) -> None:
    config = TritonServerConfig(broken_doubler_repo, models=("doubler",), startup_timeout_s=60)
    with pytest.raises(UserError, match="(?s)tritonserver exited.*doubler is broken on purpose"):
        with embedded_triton(config):
            pass


def test_missing_stub_libpython_names_the_debian_package(tmp_path: Path) -> None:
    install = locate_triton()
    check_stub_libpython(install)  # present on this machine
    # A copy of the stub whose NEEDED entry names a libpython that does not exist.
    needed = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0".encode()
    stub = tmp_path / "triton_python_backend_stub"
    blob = install.stub.read_bytes()
    assert needed in blob
    stub.write_bytes(blob.replace(needed, b"libpython9.99.so.1.0"[: len(needed)].ljust(len(needed), b"0")))
    stub.chmod(0o755)
    with pytest.raises(UserError, match=r"cannot load libpython9\.99.*apt-get install libpython3\.11"):
        check_stub_libpython(dataclasses.replace(install, stub=stub))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_stops_cleanly_on_signal(doubler_repo: Path, sig: signal.Signals) -> None:
    cli = Path(sys.executable).parent / "onepiece"
    cmd = [str(cli), "serve", "--model-repo", str(doubler_repo)]
    cmd += ["--model", "doubler", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    env = {**os.environ, "COLUMNS": "400"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "tritonserver ready" in line, line
        grpc_port = int(re.search(r"grpc 127\.0\.0\.1:(\d+)", line).group(1))
        assert _port_open(grpc_port)
        servers = _children(proc.pid)
        assert len(servers) == 1
        proc.send_signal(sig)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert f"{sig.name} received" in rest and "tritonserver stopped" in rest
    time.sleep(0.2)
    assert not Path(f"/proc/{servers[0]}").exists()
    assert not _port_open(grpc_port)
