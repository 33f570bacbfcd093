"""What a bench exposes to the network: a local Ray listens on loopback only, with token authentication.

A tiny bench runs through the CLI; while a trial trains, the listening sockets of the bench's own processes
(the CLI and every descendant: GCS, raylet, agents, workers, the trial) are listed with psutil.  The test
fails on any listener beyond loopback that runs without authentication, and asks for more: every listener
on loopback, token authentication on, the token file readable by the user alone.  Only sockets are listed
and only loopback is talked to; no other address is connected to."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import fixtures

ARGS = ["run", "--suite", "didactic", "--size", "tiny", "--algos", "onestep_fb", "--tasks",
        "didactic/three-state-v0", "--set", "onestep_fb.num_steps=100000", "--set", "onestep_fb.eval_every=50000",
        "--no-tables"]


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:      # ended meanwhile
        return ""


def test_a_second_local_ray_in_one_process_gets_its_own_file_with_the_first_token_and_a_users_is_kept(
        tmp_path, monkeypatch):
    """run_trials twice in one process (`b2fb perf`'s worker_reuse) with two Ray directories: the second Ray
    gets its own token file (the first directory may be deleted) holding the first token (Ray's driver keeps
    the token it read first); a user's token path is never replaced."""
    from benchmarks import orchestrate

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setattr(orchestrate, "_token_set_here", None)
    orchestrate._use_local_token(tmp_path / "first")
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "first" / "auth_token")
    token = (tmp_path / "first" / "auth_token").read_text()
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / "auth_token").write_text("a stale token from another process")
    orchestrate._use_local_token(tmp_path / "second")
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "second" / "auth_token")
    assert (tmp_path / "second" / "auth_token").read_text() == token and len(token) == 64
    assert (tmp_path / "second" / "auth_token").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "mine"))
    orchestrate._use_local_token(tmp_path / "third")
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "mine") and not (tmp_path / "third").exists()


TWO_RAYS = """
import shutil, sys
from pathlib import Path
from benchmarks import orchestrate   # first: it sets Ray's environment before Ray is imported
import ray
first, second = Path(sys.argv[1]), Path(sys.argv[2])
for ray_dir in (first, second):
    orchestrate.start_ray(ray_dir)
    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    ray.shutdown()
    orchestrate._stop_watchdog()
    shutil.rmtree(first, ignore_errors=True)   # as perf's per-round temporary directory
print("two local Rays ran")
"""


def test_two_local_rays_start_one_after_the_other_in_one_process(tmp_path):
    """The real thing, in a fresh process with token authentication on: a local Ray, shut down, its directory
    deleted, then another local Ray in another directory.  Before the fix the second failed to start
    (InvalidAuthToken: the driver kept the first token while the new GCS read a new one)."""
    done = subprocess.run([sys.executable, "-c", TWO_RAYS, str(tmp_path / "a"), str(tmp_path / "b")],
                          cwd=fixtures.REPO, env=fixtures.cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "two local Rays ran" in done.stdout


def test_unauthenticated_listener_check_can_fail():
    """The helper the test relies on flags exactly what it should."""
    sockets = [(1, "gcs_server", "::", 1, "token"), (2, "raylet", "0.0.0.0", 2, "disabled"),
               (3, "raylet", "::ffff:127.0.0.1", 3, None), (4, "agent", "192.0.2.2", 4, None),
               (5, "worker", "::1", 5, None)]
    assert [s[0] for s in fixtures.unauthenticated_listeners(sockets)] == [2, 4]


@pytest.fixture(scope="module")
def training_bench(tmp_path_factory):
    """A tiny bench through the CLI, stopped once its trial trains: (its listening sockets then, the trial
    process's environment as it was started, the bench's folder)."""
    tmp_path = tmp_path_factory.mktemp("network")
    proc = subprocess.Popen(fixtures.b2fb_command(tmp_path, *ARGS), cwd=fixtures.REPO, env=fixtures.cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    bench = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    sockets = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            for p in bench.children(recursive=True):
                seen.setdefault(p.pid, p)
            names = {_name(p) for p in seen.values()}
            if any("ImplicitFunc" in n for n in names):       # a trial is training: every server is up
                time.sleep(1.0)
                sockets = fixtures.listening_sockets([bench, *bench.children(recursive=True)])
                trial_env = next(p for p in seen.values() if "ImplicitFunc" in _name(p)).environ()
                break
            if proc.poll() is not None:
                pytest.fail(f"the bench ended early: {proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
        else:
            pytest.fail("no trial started within 240 s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        fixtures.kill_processes([p for p in seen.values() if p.is_running()])
    return sockets, trial_env, tmp_path


def test_a_local_bench_listens_on_loopback_only_with_token_authentication(training_bench):
    sockets, _, tmp_path = training_bench
    names = {s[1] for s in sockets}
    assert {"gcs_server", "raylet"} <= names and any("ImplicitFunc" in n for n in names), sockets
    assert fixtures.unauthenticated_listeners(sockets) == []
    assert all(fixtures.is_loopback(s[2]) for s in sockets), sockets
    ray_servers = [s for s in sockets if s[1] in ("gcs_server", "raylet")]
    assert all(s[4] == "token" for s in ray_servers), ray_servers
    token = tmp_path / "data" / "ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64


def test_trial_processes_start_with_the_benchs_allocator_settings(training_bench):
    """orchestrate's glibc thresholds (set before Ray starts) are in the environment the trial process was
    started with, which is what glibc reads (psutil reads /proc/<pid>/environ, the start-time environment)."""
    from benchmarks.orchestrate import ALLOCATOR_SETTINGS

    _, trial_env, _ = training_bench
    assert ALLOCATOR_SETTINGS and all(trial_env.get(k) == v for k, v in ALLOCATOR_SETTINGS), sorted(trial_env)


def test_nothing_of_a_bench_outlives_kill_9_for_long(tmp_path):
    """After `kill -9` of the bench, its Ray processes go too: GCS and raylet at once (Ray ties them to the
    driver), the agents and workers through the bench's watchdog (Ray's agents alone linger about 60 s,
    retrying the dead GCS)."""
    proc = subprocess.Popen(fixtures.b2fb_command(tmp_path, *ARGS), cwd=fixtures.REPO, env=fixtures.cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    names: set[str] = set()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any("ImplicitFunc" in n for n in names):
            for p in bench.children(recursive=True):
                try:
                    names.add(p.name())
                    seen.setdefault(p.pid, p)
                except psutil.Error:
                    pass
            assert proc.poll() is None, "the bench ended early"
            time.sleep(0.3)
        assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names, names
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(list(seen.values()), timeout=30)
        assert alive == [], [p.pid for p in alive]
    finally:
        fixtures.kill_processes([p for p in seen.values() if p.is_running()])
