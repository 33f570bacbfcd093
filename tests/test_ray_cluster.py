"""A real Ray cluster, as the README's "On a cluster" recipe builds one: a head and a second node started
with `ray start` on this machine (loopback address 127.0.0.2, token authentication, a token file readable
by the user alone), the tiny didactic grid run through `RAY_ADDRESS`, its results compared bit for bit with
the same trials run locally, and both nodes stopped, always (by their own processes, never `ray stop`, which would
stop every Ray of this user on the machine).

Why 127.0.0.2: Ray maps 127.0.0.1 to the machine's external address in multi-node mode, but takes any
other loopback address as given.  Ray's servers then listen on every interface, so this also checks that
each of them requires the token and that a client with a wrong token is refused."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

import fixtures
from benchmarks.config import load_experiment
from benchmarks.results import execute_trial

NODE_IP = "127.0.0.2"
SHORT = ["--set", "onestep_fb.num_steps=600", "--set", "onestep_fb.eval_every=200",
         "--set", "fb.num_steps=200", "--set", "fb.eval_every=100"]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((NODE_IP, 0))
        return s.getsockname()[1]


def cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process of the cluster: those whose command line names its temp dir, and their descendants."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(p.info["cmdline"] or []):
                for q in (p, *p.children(recursive=True)):
                    found[q.pid] = q
        except psutil.Error:
            pass
    return list(found.values())


@pytest.fixture
def cluster(tmp_path):
    """(RAY_ADDRESS, environment with the cluster's token, temp dir) of a two-node cluster; stopped after."""
    temp_dir = tempfile.mkdtemp(prefix="b2fb-ray-", dir="/tmp")       # short: Ray's socket paths are limited
    token = tmp_path / "ray_token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secrets.token_hex(32).encode())
    os.close(fd)
    env = {**fixtures.cli_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PYTHONPATH": str(fixtures.REPO)}
    port = free_port()
    address = f"{NODE_IP}:{port}"
    common = ["--node-ip-address", NODE_IP, "--num-cpus", "1", "--temp-dir", temp_dir, "--disable-usage-stats"]
    try:
        for args in (["--head", "--port", str(port), "--include-dashboard=false"], ["--address", address]):
            started = subprocess.run([RAY, "start", *args, *common], env=env, capture_output=True, text=True,
                                     timeout=120)
            assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield address, env, temp_dir
    finally:
        fixtures.kill_processes(cluster_processes(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert cluster_processes(temp_dir) == []


def test_a_two_node_cluster_runs_the_tiny_grid_bit_identically(tmp_path, cluster):
    address, env, temp_dir = cluster
    # a client with a wrong token is refused (runs while the bench does)
    intruder = subprocess.Popen(
        [sys.executable, "-c", "import ray, sys\ntry:\n    ray.init(address=sys.argv[1], logging_level='ERROR')\n"
         "except Exception as e:\n    print('refused', type(e).__name__)\nelse:\n    print('CONNECTED')", address],
        env={**env, "RAY_AUTH_TOKEN_PATH": "", "RAY_AUTH_TOKEN": "not-the-token"}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    args = ["run", "--suite", "didactic", "--size", "tiny", *SHORT, "--no-tables"]
    on_cluster = subprocess.run(fixtures.b2fb_command(tmp_path / "cluster", *args), cwd=fixtures.REPO,
                                env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=600)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    nodes = subprocess.run(
        [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
         "print(sorted((n['NodeManagerAddress'], n['Resources']['CPU']) for n in ray.nodes() if n['Alive']))",
         address], env=env, capture_output=True, text=True, timeout=120)
    assert nodes.stdout.strip() == f"[('{NODE_IP}', 1.0), ('{NODE_IP}', 1.0)]", nodes.stderr[-2000:]
    # every listener of the cluster beyond loopback requires the token
    sockets = fixtures.listening_sockets(cluster_processes(temp_dir))
    assert {s[1] for s in sockets} >= {"gcs_server", "raylet"}
    assert fixtures.unauthenticated_listeners(sockets) == [], sockets
    assert intruder.communicate(timeout=120)[0].strip() == "refused ConnectionError"

    # the same trials run locally, in this process (a local run's trial is exactly this call, without Ray)
    for trial in load_experiment("didactic", "tiny", overrides=SHORT[1::2]).trials():
        assert execute_trial(trial, tmp_path / "local" / "results", threads=1) == "done"
    cluster_runs = sorted((tmp_path / "cluster" / "results" / "didactic" / "runs").iterdir())
    local_runs = sorted((tmp_path / "local" / "results" / "didactic" / "runs").iterdir())
    assert [r.name for r in cluster_runs] == [r.name for r in local_runs] and len(cluster_runs) == 4
    for a, b in zip(cluster_runs, local_runs):
        for name in ("scalars.jsonl", "samples.parquet"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (a.name, name)
