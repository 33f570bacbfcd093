"""Pixel observations of the dmc suite: datasets re-rendered 1:1 from a state dataset's physics states.

Every episode file of a state dataset (suites/dmc/dataset.py) stores `physics`, the state beside each
observation row.  Restoring a state and rendering it gives the same frame, bit for bit, as rendering the
live environment there (tested), so a pixel dataset is its state dataset's transitions, rewards and split
seen through a camera: nothing is collected again.

    <state dataset>/pixels-64-cam0-reflection0-shadow0/      one subdirectory per render setting
        000000_1000.npz   `frames` [T+1, size, size, 3] uint8: row t rendered from physics[t] of the state
        000001_1000.npz   episode file of the same name (savez_compressed, fixed zip timestamps)
        meta.json         the render settings, the GL renderer, each state file's sha256 that a frame
                          file was rendered from (`state_files`), each frame file's sha256 (`files`)

Rendering (`render_dataset`, `b2fb render`) is resumable per episode file (files are written atomically;
one whose state file changed is rendered again), draws a progress bar, and runs in `workers` processes
spawned without torch (Mesa's LLVM clashes with the one torch's triton loads, suites/dmc/_mujoco.py), each
with `LP_NUM_THREADS=1` (llvmpipe's own threads would fight the other worker for the cores).

Loading (`load_frames`) checks the settings, every frame file against meta.json, and every loaded state
file against the sha256 its frames were rendered from: a state dataset that changed since (re-collected,
extended into new episodes that were not rendered) is one line naming `b2fb render`.  Stray `.npz` files
beside the episodes are refused.  Frame stacks are built by index when a batch is drawn (`FrameStacks`):
the observation at row t stacks rows t-k+1 .. t of its episode, clamped at the episode's first row (as
OGBench's visual datasets do), channels first: [k*3, size, size].

Settings (`RenderSettings`, the pixel task's kwargs): image size, camera (DrQ's: walker and cheetah 0,
quadruped 2; jaco: "front_close", suites/dmc/jaco.py), render flags (dm_control `render_flag_overrides`;
shadows and reflections off make llvmpipe ~5x faster, env.md §2b), frame stack.  The models rendered are
the pixel versions of suites/dmc/envs.py (quadruped: one floor size; jaco: camera added, target hidden).

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from suites.dmc import dataset as ds
from suites.dmc.domains import DOMAINS, get_domain
from suites.errors import UserError

__all__ = [
    "CAMERAS",
    "RenderSettings",
    "render_dataset",
    "load_frames",
    "FrameStacks",
    "gl_renderer",
    "probe",
    "pixel_dir",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
CAMERAS: dict[str, int | str] = {"walker": 0, "cheetah": 0, "quadruped": 2, "jaco": "front_close"}
"""Default camera per domain: DrQ's for the suite domains; jaco: ExORL's FRONT_CLOSE."""
FRAMES_KEY = "frames"


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """What a pixel observation is: `size` x `size` RGB from `camera`, with dm_control render flags."""

    domain: str
    size: int = 64
    camera: int | str = 0
    flags: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def make(
        cls, domain: str, size: int, camera: int | str | None, flags: dict[str, bool] | None
    ) -> "RenderSettings":
        """Checked settings; a bad one is a UserError (an unknown camera is found by `probe`)."""
        get_domain(domain)
        if domain not in CAMERAS:
            raise UserError(f"dmc/{domain} has no pixel version (domains with one: {', '.join(CAMERAS)})")
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 512:
            raise UserError(
                f"dmc/{domain}: task kwarg image_size must be an integer in [16, 512], got {size!r}"
            )
        camera = CAMERAS[domain] if camera is None else camera
        if (
            isinstance(camera, bool)
            or not isinstance(camera, (int, str))
            or (isinstance(camera, int) and camera < 0)
        ):
            raise UserError(
                f"dmc/{domain}: task kwarg camera must be a camera index >= 0 or a camera name, "
                f"got {camera!r}"
            )
        flags = dict(flags or {})
        for key, value in flags.items():
            if not isinstance(key, str) or not isinstance(value, bool):
                raise UserError(
                    f"dmc/{domain}: task kwarg render_flags maps flag names (e.g. shadow, reflection, "
                    f"skybox) to true/false, got {key!r}: {value!r}"
                )
        return cls(domain, size, camera, tuple(sorted(flags.items())))

    @property
    def dirname(self) -> str:
        """`pixels-<size>-cam<camera>[-<flag><0|1>...]`, e.g. pixels-64-cam0-reflection0-shadow0."""
        return "-".join([f"pixels-{self.size}-cam{self.camera}", *(f"{k}{int(v)}" for k, v in self.flags)])

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "size": self.size, "camera": self.camera, "flags": dict(self.flags)}

    def render(self, physics) -> np.ndarray:
        """[size, size, 3] uint8 of the physics' current state (one frame; for many, use `renderer`)."""
        return physics.render(
            self.size, self.size, camera_id=self.camera, render_flag_overrides=dict(self.flags)
        )

    def renderer(self, physics) -> Callable[[], np.ndarray]:
        """A function drawing `physics`' current state as `render` does, bit for bit (tested), reusing one
        dm_control Camera: `physics.render` builds a Camera and its scene for every frame, ~1/3 of the
        CPU time of a 64 px frame on llvmpipe.  Valid while `physics` is the same object (no reload)."""
        from dm_control.mujoco.engine import Camera

        camera = Camera(physics, self.size, self.size, self.camera)
        flags = dict(self.flags)
        return lambda: camera.render(render_flag_overrides=flags)


def pixel_dir(state_dir: Path | str, settings: RenderSettings) -> Path:
    return Path(state_dir) / settings.dirname


def _render_env(domain: str):
    """The pixel environment of the domain (any task: the model is the same for all, see envs.py)."""
    from suites.dmc.envs import DMCEnv

    return DMCEnv(domain, DOMAINS[domain].tasks[0], seed=0, pixels=True)


def set_physics_state(physics, state: np.ndarray) -> None:
    """Restore a stored `physics.get_state()` and recompute what rendering reads (positions)."""
    with physics.reset_context():
        physics.set_state(state)


def gl_renderer(physics) -> str:
    """GL_RENDERER of the context `physics` renders with (e.g. 'llvmpipe (LLVM 15.0.6, 256 bits)')."""
    from OpenGL import GL

    with physics.contexts.gl.make_current() as ctx:
        name = ctx.call(GL.glGetString, GL.GL_RENDERER)
    return name.decode() if isinstance(name, bytes) else str(name)


def _probe_main(domain: str, size: int, camera: str, flags: str, stage: str) -> None:
    """Child process of `probe`.  stage "camera" (run with MUJOCO_GL=disabled, so it works without any GL):
    the camera exists in the model.  stage "render": one frame renders; prints the GL renderer.  A failure
    is one line on stderr, exit code 3."""
    import sys

    settings = RenderSettings.make(
        domain, size, int(camera) if camera.isdigit() else camera, json.loads(flags)
    )
    try:
        env = _render_env(domain)
        env.reset(seed=0)
    except Exception as err:  # noqa: BLE001 - no GL backend: dm_control fails while importing or building
        print(f"gl: {_one_line(err)}", file=sys.stderr)
        sys.exit(3)
    if stage == "camera":
        model = env.physics.model
        names = [model.id2name(i, "camera") for i in range(model.ncam)]
        if (isinstance(settings.camera, int) and settings.camera >= model.ncam) or (
            isinstance(settings.camera, str) and settings.camera not in names
        ):
            print(
                f"camera: the model has {model.ncam} cameras: "
                f"{', '.join(f'{i} ({n})' if n else str(i) for i, n in enumerate(names))}",
                file=sys.stderr,
            )
            sys.exit(3)
        return
    try:
        settings.render(env.physics)
        renderer = gl_renderer(env.physics)
    except Exception as err:  # noqa: BLE001
        print(f"gl: {_one_line(err)}", file=sys.stderr)
        sys.exit(3)
    print(renderer)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def probe(
    settings: RenderSettings, timeout: float = 120.0, stages: tuple[str, ...] = ("camera", "render")
) -> str:
    """Check the camera, then render one frame, each in a fresh process (no torch, like the render workers);
    return the GL renderer.  One line (UserError) when the camera does not exist in the domain's model
    (checked without GL), or when no GL backend works here (`MUJOCO_GL` names one that cannot start).
    Subprocesses, because dm_control picks its GL backend once per process, when it is imported."""
    import subprocess
    import sys

    env = {**os.environ, "LP_NUM_THREADS": "1"}
    env.setdefault("MUJOCO_GL", "egl")
    backend = env["MUJOCO_GL"]
    proc = None
    for stage in stages:
        code = (
            f"from suites.dmc.pixels import _probe_main; _probe_main({settings.domain!r}, {settings.size}, "
            f"{str(settings.camera)!r}, {json.dumps(json.dumps(dict(settings.flags)))}, {stage!r})"
        )
        stage_env = {**env, "MUJOCO_GL": "disabled"} if stage == "camera" else env
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=stage_env
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"rendering one {settings.domain} frame took over {timeout:.0f} s (MUJOCO_GL={backend}): "
                f"check the GL backend (see the README, 'DMC from pixels')"
            ) from None
        if proc.returncode == 0:
            continue
        lines = [line for line in proc.stderr.splitlines() if line.startswith(("gl: ", "camera: "))]
        last = (
            lines[-1] if lines else (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        )
        if last.startswith("camera: "):
            raise UserError(
                f"dmc/{settings.domain} has no camera {settings.camera!r} ({last[8:]}): choose one of "
                f"them (task kwarg camera, or --camera; default {CAMERAS[settings.domain]!r})"
            )
        raise UserError(
            f"no working GL backend for pixel rendering (MUJOCO_GL={backend}: "
            f"{last.removeprefix('gl: ')[:200]}): set MUJOCO_GL=egl (needs libEGL, e.g. Debian's libegl1 "
            f"and libgl1-mesa-dri) or MUJOCO_GL=osmesa (libosmesa6)"
        )
    return proc.stdout.strip().splitlines()[-1] if proc is not None and proc.stdout.strip() else ""


# ---- rendering a dataset ----------------------------------------------------------------------------------
def _state_meta(state_dir: Path, domain: str) -> dict[str, Any]:
    """The state dataset's meta.json with `files` (name -> sha256).  An ExORL download has no meta.json: its
    files are hashed here."""
    meta = ds.read_meta(state_dir)
    if meta is None:
        files, _ = ds.list_episode_files(state_dir)
        if not files:
            raise UserError(
                f"{state_dir} holds no episode files (*.npz): collect the state dataset first "
                f"(`b2fb collect --domain {domain} ...`); pixels are rendered from its physics"
            )
        return {"domain": domain, "status": "complete", "files": {p.name: ds.file_sha256(p) for p in files}}
    if meta.get("status") != "complete":
        raise UserError(
            f"dataset {state_dir} is incomplete (collection was interrupted): finish it with the same "
            f"collect command before rendering its pixels"
        )
    if meta.get("domain") != domain:
        raise UserError(
            f"{state_dir} holds a {meta.get('domain')} dataset, not {domain}: pass --domain "
            f"{meta.get('domain')} or the {domain} dataset's path"
        )
    return meta


def check_not_stale(state_dir: Path | str, settings: RenderSettings, state_hashes: dict[str, str]) -> None:
    """Frames already rendered from a state file whose sha256 has changed since: one UserError line.  (The
    state datasets collected here never rewrite a file, so this means the state dataset was replaced.)"""
    out_dir = pixel_dir(state_dir, settings)
    meta = ds.read_meta(out_dir) if out_dir.is_dir() else None
    rendered_from = (meta or {}).get("state_files") or {}
    for name, digest in sorted(rendered_from.items()):
        if name in state_hashes and digest != state_hashes[name]:
            raise UserError(
                f"pixel dataset {out_dir} was rendered from another state dataset: the state sha256 of "
                f"{name} is now {state_hashes[name][:12]}..., its frames were rendered from "
                f"{digest[:12]}...; delete {out_dir} and render again with "
                f"{_render_command(settings, Path(state_dir))}"
            )


def _render_episode(state_path: Path, settings: RenderSettings, env) -> np.ndarray:
    physics = ds.read_episode(state_path)["physics"]
    frames = np.empty((len(physics), settings.size, settings.size, 3), np.uint8)
    draw = settings.renderer(env.physics)
    for t, state in enumerate(physics):
        set_physics_state(env.physics, state)
        frames[t] = draw()
    return frames


def _render_worker(state_dir: str, out_dir: str, settings: RenderSettings, names: list[str], queue) -> None:
    """A render worker (spawned; imports no torch): render its episode files, report each one."""
    os.environ["LP_NUM_THREADS"] = "1"
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from benchmarks.results import atomic_write_bytes

        env = _render_env(settings.domain)
        queue.put(("renderer", gl_renderer(env.physics)))
        for name in names:
            start = time.perf_counter()
            frames = _render_episode(Path(state_dir) / name, settings, env)
            data = ds.encode_episode({FRAMES_KEY: frames})
            atomic_write_bytes(Path(out_dir) / name, data)
            queue.put(
                (
                    "episode",
                    name,
                    hashlib.sha256(data).hexdigest(),
                    len(frames),
                    time.perf_counter() - start,
                    time.process_time(),
                )
            )
        queue.put(("done", None))
    except UserError as err:
        queue.put(("user_error", str(err)))
    except BaseException:  # noqa: BLE001 - the parent raises it
        import traceback

        queue.put(("error", traceback.format_exc()))


def render_dataset(
    state_dir: Path | str,
    settings: RenderSettings,
    workers: int = 2,
    progress: bool = True,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Render the pixel dataset of a complete state dataset (or of its episode files `names`) into
    `<state_dir>/<settings.dirname>/`.  Resumable: frame files already rendered from the current state files
    are kept.  Returns {out_dir, episodes, rendered, frames, seconds, frames_per_second, sha256, renderer,
    cpu_seconds_per_frame, episode_seconds}: `seconds` is the whole call (GL probe and worker start-up
    included), `episode_seconds` the workers' summed time inside their episodes (rendering and writing)."""
    state_dir = Path(state_dir).expanduser().resolve()
    if not state_dir.is_dir():
        raise UserError(
            f"no state dataset at {state_dir}: collect it with `b2fb collect --domain "
            f"{settings.domain} ...` or run the grid (`b2fb run`), which collects and renders what it needs"
        )
    state_meta = _state_meta(state_dir, settings.domain)
    state_hashes = state_meta.get("files") or {}
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers must be an integer >= 1, got {workers!r}")
    files, _ = ds.list_episode_files(state_dir)
    every = [p.name for p in files]
    names = every if names is None else list(names)
    if set(names) - set(every):
        raise UserError(f"{state_dir} has no episode file {sorted(set(names) - set(every))[0]}")
    out_dir = pixel_dir(state_dir, settings)
    out_dir.mkdir(exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    meta = ds.read_meta(out_dir) or {}
    if meta and meta.get("settings") != settings.to_dict():
        raise UserError(
            f"{out_dir} holds frames rendered with other settings ({meta.get('settings')}): delete it "
            f"and render again"
        )
    check_not_stale(state_dir, settings, state_hashes)
    frame_hashes = dict(meta.get("files") or {})
    rendered_from = dict(meta.get("state_files") or {})
    todo = [
        n
        for n in names
        if not (
            (out_dir / n).is_file() and rendered_from.get(n) == state_hashes.get(n) and frame_hashes.get(n)
        )
    ]
    renderer = meta.get("gl_renderer")
    started, cpu = time.perf_counter(), 0.0
    frames_done, episode_seconds = 0, 0.0
    if todo:
        renderer = probe(settings)
        base = {
            "format_version": FORMAT_VERSION,
            "domain": settings.domain,
            "settings": settings.to_dict(),
            "dmc_version": state_meta.get("dmc_version", 0),
            "gl_renderer": renderer,
            "status": "rendering",
            "files": frame_hashes,
            "state_files": rendered_from,
        }
        _write_meta(out_dir, base)
        from tqdm import tqdm

        bar = tqdm(
            total=len(names),
            initial=len(names) - len(todo),
            unit="episode",
            dynamic_ncols=True,
            desc=f"render {settings.domain} {settings.dirname}",
            disable=not progress,
        )
        written: dict[str, tuple[str, float]] = {}

        def on_message(message: tuple) -> None:
            nonlocal frames_done, episode_seconds
            if message[0] == "episode":
                _, name, digest, n, _seconds, _cpu = message
                episode_seconds += _seconds
                frame_hashes[name], rendered_from[name] = digest, state_hashes.get(name)
                written[name] = (digest, _cpu)
                frames_done += n
                bar.update(1)
                if len(written) % 10 == 0:  # resumable bookkeeping, not on every file
                    _write_meta(out_dir, {**base, "files": frame_hashes, "state_files": rendered_from})
            elif message[0] == "renderer" and message[1] != renderer:
                raise RuntimeError(f"a render worker got GL renderer {message[1]!r}, the probe {renderer!r}")

        try:
            cpu = _run_render_workers(state_dir, out_dir, settings, todo, workers, on_message)
        finally:
            bar.close()
            _write_meta(out_dir, {**base, "files": frame_hashes, "state_files": rendered_from})
    seconds = time.perf_counter() - started
    listed = {n: frame_hashes[n] for n in names}
    meta = {
        "format_version": FORMAT_VERSION,
        "domain": settings.domain,
        "settings": settings.to_dict(),
        "dmc_version": state_meta.get("dmc_version", 0),
        "gl_renderer": renderer,
        "status": "complete",
        "files": {**frame_hashes, **listed},
        "state_files": rendered_from,
        "state_sha256": ds.dataset_sha256({n: state_hashes[n] for n in names}),
        "sha256": ds.dataset_sha256(listed),
    }
    if todo or ds.read_meta(out_dir) != meta:
        _write_meta(out_dir, meta)
    return {
        "out_dir": str(out_dir),
        "episodes": len(names),
        "rendered": len(todo),
        "frames": frames_done,
        "seconds": seconds,
        "frames_per_second": frames_done / seconds if todo and seconds > 0 else None,
        "cpu_seconds_per_frame": cpu / frames_done if frames_done else None,
        "episode_seconds": episode_seconds,
        "sha256": meta["sha256"],
        "renderer": renderer,
    }


def _write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    from benchmarks.results import atomic_write_json

    atomic_write_json(out_dir / ds.META, meta)


def _run_render_workers(
    state_dir: Path,
    out_dir: Path,
    settings: RenderSettings,
    names: list[str],
    workers: int,
    on_message: Callable[[tuple], None],
) -> float:
    """Spawn `workers` processes (no torch is imported in them) over interleaved shares of `names`; returns
    the CPU seconds the workers spent."""
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    shares = [names[w::workers] for w in range(workers) if names[w::workers]]
    procs = [
        ctx.Process(
            target=_render_worker,
            args=(str(state_dir), str(out_dir), settings, share, messages),
            daemon=True,
            name=f"b2fb-render-{w}",
        )
        for w, share in enumerate(shares)
    ]
    saved = os.environ.get("LP_NUM_THREADS")
    os.environ["LP_NUM_THREADS"] = "1"  # the spawned interpreters read it before Mesa starts
    try:
        for p in procs:
            p.start()
    finally:
        if saved is None:
            os.environ.pop("LP_NUM_THREADS", None)
        else:
            os.environ["LP_NUM_THREADS"] = saved
    finished, cpu = 0, {}
    try:
        while finished < len(procs):
            try:
                message = messages.get(timeout=0.5)
            except queue_module.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(
                        f"render worker {dead[0].name} died (exit code {dead[0].exitcode}); re-run to resume"
                    )
                continue
            kind = message[0]
            if kind == "episode":
                cpu[message[1]] = message[5]
                on_message(message)
            elif kind == "renderer":
                on_message(message)
            elif kind == "done":
                finished += 1
            elif kind == "user_error":
                raise UserError(message[1])
            else:
                raise RuntimeError(f"a render worker failed:\n{message[1]}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        messages.close()
    return _worker_cpu(cpu, shares)


def _worker_cpu(cpu_at: dict[str, float], shares: list[list[str]]) -> float:
    """Total CPU seconds of the workers: each worker's process time at its last episode."""
    return sum(cpu_at[share[-1]] for share in shares if share and share[-1] in cpu_at)


# ---- loading -----------------------------------------------------------------------------------------------
def _render_command(settings: RenderSettings, state_dir: Path) -> str:
    flags = " ".join(f"--flag {k}={'true' if v else 'false'}" for k, v in settings.flags)
    return (
        f"`b2fb render --domain {settings.domain} --dataset {state_dir} --image-size {settings.size} "
        f"--camera {settings.camera}{' ' + flags if flags else ''}`"
    )


def check_pixels(state_dir: Path | str, settings: RenderSettings, state_file_hashes: dict[str, str]) -> dict:
    """The pixel dataset's meta.json after checking it against the state files that will be loaded
    (name -> sha256): complete, the same settings, no stray or missing files, rendered from these very
    state files.  Every problem is one UserError line."""
    state_dir = Path(state_dir)
    out_dir = pixel_dir(state_dir, settings)
    command = _render_command(settings, state_dir)
    meta = ds.read_meta(out_dir) if out_dir.is_dir() else None
    if meta is None:
        raise UserError(
            f"no pixel dataset at {out_dir}: render it with {command} (or run the grid, which renders "
            f"what it needs)"
        )
    if meta.get("format_version") != FORMAT_VERSION or meta.get("settings") != settings.to_dict():
        raise UserError(
            f"{out_dir} holds frames of another format or settings ({meta.get('settings')}): delete it "
            f"and render again with {command}"
        )
    if meta.get("status") != "complete":
        raise UserError(
            f"pixel dataset {out_dir} is incomplete (rendering was interrupted): re-run {command} "
            f"to finish it"
        )
    names = set(meta.get("files") or {})
    stray = sorted(p.name for p in out_dir.glob("*.npz") if p.name not in names)
    if stray:
        raise UserError(
            f"{out_dir / stray[0]} is not listed in {out_dir / ds.META} ({len(stray)} stray .npz "
            f"files): remove it from the pixel dataset directory"
        )
    rendered_from = meta.get("state_files") or {}
    for name, digest in state_file_hashes.items():
        if name not in names or not (out_dir / name).is_file():
            raise UserError(f"{out_dir} has no frames of episode {name}: render them with {command}")
        if rendered_from.get(name) != digest:
            raise UserError(
                f"pixel dataset {out_dir} was rendered from another state dataset: the state sha256 "
                f"of {name} is {digest[:12]}..., its frames were rendered from "
                f"{str(rendered_from.get(name))[:12]}...; render again with {command}"
            )
    return meta


def load_frames(
    state_dir: Path | str,
    settings: RenderSettings,
    files: tuple[str, ...],
    state_file_hashes: dict[str, str],
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The frames of the episode files `files` (in that order), channels first: [R, 3, size, size] uint8
    with R = sum of rows (T+1 per episode), the first row of each episode (`starts` [E]), and meta.json."""
    state_dir = Path(state_dir)
    meta = check_pixels(state_dir, settings, state_file_hashes)
    out_dir = pixel_dir(state_dir, settings)
    rows = [ds._episode_length_of(name) + 1 for name in files]
    frames = np.empty((sum(rows), 3, settings.size, settings.size), np.uint8)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    for name, start, n in zip(files, starts, rows):
        data = (out_dir / name).read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != meta["files"][name]:
            raise UserError(
                f"frame file {out_dir / name} does not match its sha256 in {out_dir / ds.META} "
                f"(modified or corrupt): delete it and render again with "
                f"{_render_command(settings, state_dir)}"
            )
        arrays = ds.read_episode(out_dir / name, data)
        episode = arrays.get(FRAMES_KEY)
        if (
            episode is None
            or episode.shape != (n, settings.size, settings.size, 3)
            or episode.dtype != np.uint8
        ):
            raise UserError(
                f"frame file {out_dir / name} holds {None if episode is None else episode.shape} frames, "
                f"expected ({n}, {settings.size}, {settings.size}, 3) uint8: delete it and render again"
            )
        frames[start : start + n] = episode.transpose(0, 3, 1, 2)
    return frames, starts, meta


class FrameStacks:
    """Stacked pixel observations of transitions, built by index from one frame array.

    frames [R, 3, H, W] uint8 (episode rows in file order), `row` [N]: each transition's observation row
    (s_t at row t of its episode; s_{t+1} is row + 1), `start` [N]: its episode's first row.  A stack of
    k frames at row r is rows r-k+1 .. r, each clamped to the episode's first row; channels concatenate
    oldest first: [k*3, H, W]."""

    def __init__(self, frames: np.ndarray, row: np.ndarray, start: np.ndarray, stack: int):
        self.frames, self.row, self.start, self.stack = frames, row, start, stack
        self._offsets = np.arange(stack - 1, -1, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.row)

    def subset(self, lo: int, hi: int) -> "FrameStacks":
        return FrameStacks(self.frames, self.row[lo:hi], self.start[lo:hi], self.stack)

    def _gather(self, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        index = np.maximum(rows[:, None] - self._offsets[None], starts[:, None])  # [n, k]
        out = self.frames[index]  # [n, k, 3, H, W]
        return out.reshape(len(rows), self.stack * 3, *self.frames.shape[2:])

    def obs(self, index: np.ndarray) -> np.ndarray:
        return self._gather(self.row[index], self.start[index])

    def next_obs(self, index: np.ndarray) -> np.ndarray:
        return self._gather(self.row[index] + 1, self.start[index])


def transition_rows(episode_rows: np.ndarray, episode_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For an OfflineDataset's episodes (rows used per episode, transitions T per episode): the frame row of
    each transition's s_t and its episode's first frame row, in a frame array holding T+1 rows per episode."""
    starts = np.concatenate([[0], np.cumsum(np.asarray(episode_lengths) + 1)[:-1]]).astype(np.int64)
    row = (
        np.concatenate([s + np.arange(n) for s, n in zip(starts, episode_rows)])
        if len(starts)
        else np.zeros(0)
    )
    start = np.repeat(starts, episode_rows)
    return row.astype(np.int64), start.astype(np.int64)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("use `b2fb render` (benchmarks/cli.py)")
