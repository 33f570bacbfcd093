"""Reward-free dmc data: collection in ExORL's format (random and RND explorers), resumption, the loader's
index shift and splits, and one-line errors for bad datasets and arguments.

Episodes are shortened (`episode_length`) so that the whole file runs in well under a minute.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports dm_control

import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from suites.dmc import dataset as ds  # noqa: E402
from suites.dmc.collect import collect, main_collect  # noqa: E402
from suites.dmc.dataset import load_dataset, split_dataset  # noqa: E402
from suites.dmc.domains import DOMAINS  # noqa: E402
from suites.errors import UserError  # noqa: E402

# No module-level import may load dm_control (suites.dmc.envs / relabel): pytest imports every test file
# before running any test, and dm_control's EGL stack loaded before torch's first optimiser (which imports
# triton) segfaults the process.  Tests import it inside.

T = 20  # transitions per test episode
RND_TINY = {"size": "tiny", "num_seed_frames": 60, "batch_size": 16}


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.npz"))}


def _one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture(scope="module")
def walker_random(tmp_path_factory) -> Path:
    """3 walker episodes of T steps (steps=50 rounds up to 3 episodes), collected in this process."""
    out = tmp_path_factory.mktemp("data") / "walker-random"
    summary = collect("walker", "random", 50, out, workers=1, seed=3, episode_length=T, progress=False)
    assert summary["episodes"] == 3 and summary["transitions"] == 3 * T and summary["new_episodes"] == 3
    return out


@pytest.fixture(scope="module")
def walker_exorl(walker_random, tmp_path_factory) -> Path:
    """The same episodes as an ExORL download: timestamped names under buffer/, ExORL's keys only
    (a `reward` column, no per-task rewards), no meta.json."""
    root = tmp_path_factory.mktemp("exorl") / "rnd"
    (root / "buffer").mkdir(parents=True)
    for i, path in enumerate(sorted(walker_random.glob("*.npz"))):
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("observation", "action", "discount", "physics")}
        arrays["reward"] = np.zeros((T + 1, 1), np.float32)
        np.savez_compressed(root / "buffer" / f"20220101T0000{i:02d}_{i}_{T}.npz", **arrays)
    return root


# ---- the format -----------------------------------------------------------------------------------------
def test_random_collection_writes_exorl_episodes_with_every_tasks_reward(walker_random):
    from suites.dmc.relabel import relabel

    spec = DOMAINS["walker"]
    names = sorted(p.name for p in walker_random.glob("*.npz"))
    assert names == [f"00000{i}_{T}.npz" for i in range(3)]
    for name in names:
        with np.load(walker_random / name) as z:
            keys = set(z.files)
            assert keys == {"observation", "action", "discount", "physics"} | {f"reward_{t}" for t in spec.tasks}
            assert z["observation"].shape == (T + 1, spec.obs_dim) and z["observation"].dtype == np.float32
            assert z["action"].shape == (T + 1, spec.action_dim) and z["action"].dtype == np.float32
            assert z["discount"].shape == (T + 1, 1) and z["discount"].dtype == np.float32
            assert z["physics"].shape == (T + 1, spec.state_dim) and z["physics"].dtype == np.float64
            assert np.all(z["action"][0] == 0) and np.all(z["discount"] == 1)
            assert np.all(np.abs(z["action"][1:]) <= 1) and np.std(z["action"][1:]) > 0.3
            relabelled = relabel("walker", z["physics"])
            for task in spec.tasks:
                stored = z[f"reward_{task}"]
                assert stored.shape == (T + 1, 1) and stored.dtype == np.float32
                np.testing.assert_array_equal(stored[:, 0], relabelled[task].astype(np.float32))
    # distinct episodes (own seeds), and the initial states differ
    with np.load(walker_random / names[0]) as a, np.load(walker_random / names[1]) as b:
        assert not np.array_equal(a["physics"][0], b["physics"][0])


def test_meta_json_describes_the_dataset_and_hashes_it(walker_random):
    meta = json.loads((walker_random / "meta.json").read_text())
    spec = DOMAINS["walker"]
    assert meta["status"] == "complete" and meta["domain"] == "walker" and meta["explorer"] == "random"
    assert meta["episodes"] == 3 and meta["transitions"] == 3 * T and meta["episode_length"] == T
    assert (meta["obs_dim"], meta["action_dim"], meta["state_dim"]) == (spec.obs_dim, spec.action_dim, spec.state_dim)
    assert meta["tasks"] == list(spec.tasks) and meta["seed"] == 3 and meta["explorer_config"] == {}
    assert "git" in meta["code"] and meta["code"]["versions"]["mujoco"] == "3.17.0"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in walker_random.glob("*.npz")}
    assert meta["files"] == files
    lines = "".join(f"{files[n]}  {n}\n" for n in sorted(files))  # `sha256sum *.npz | sha256sum`
    assert meta["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    log = [json.loads(line) for line in (walker_random / "explorer_log.jsonl").read_text().splitlines()]
    assert [row["episode"] for row in log] == [0, 1, 2]
    # fixed zip timestamps: the bytes do not depend on when the file was written
    with zipfile.ZipFile(walker_random / f"000000_{T}.npz") as z:
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_point_mass_maze_rewards_are_computed_from_the_action_too(tmp_path):
    from suites.dmc.relabel import relabel

    out = tmp_path / "maze"
    collect("point_mass_maze", "random", 30, out, workers=1, episode_length=30, progress=False)
    with np.load(out / "000000_30.npz") as z:
        with_actions = relabel("point_mass_maze", z["physics"], z["action"])
        for task, values in with_actions.items():
            np.testing.assert_array_equal(z[f"reward_{task}"][:, 0], values.astype(np.float32))


# ---- parallel workers and resumption ----------------------------------------------------------------------
def test_resumed_random_collection_equals_an_uninterrupted_one(tmp_path):
    steps = 5 * T
    whole = tmp_path / "whole"
    collect("walker", "random", steps, whole, workers=1, seed=1, episode_length=T, progress=False)
    expected = _files(whole)
    assert len(expected) == 5

    part = tmp_path / "part"
    collect("walker", "random", 2 * T, part, workers=1, seed=1, episode_length=T, progress=False)
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in part.glob("*.npz")}
    (part / f".000002_{T}.npz.x1y2.tmp").write_bytes(b"half a file")  # what a killed writer leaves
    # resume with two spawned workers: the content depends on the episode index only
    summary = collect("walker", "random", steps, part, workers=2, seed=1, episode_length=T, progress=False)
    assert summary["new_episodes"] == 3
    assert _files(part) == expected
    assert not list(part.glob(".*.tmp"))
    assert {n: (p.stat().st_ino, p.stat().st_mtime_ns) for n, p in ((p.name, p) for p in part.glob("*.npz"))
            if n in first} == first  # never rewritten

    # an interruption in the middle: a lost episode and a meta.json still saying "collecting"
    (part / f"000003_{T}.npz").unlink()
    meta = json.loads((part / "meta.json").read_text())
    (part / "meta.json").write_text(json.dumps({**meta, "status": "collecting"}))
    _one_line_error(load_dataset, part, "walker", match="incomplete")
    before = {p.name: p.stat().st_mtime_ns for p in part.glob("*.npz")}
    summary = collect("walker", "random", steps, part, workers=1, seed=1, episode_length=T, progress=False)
    assert summary["new_episodes"] == 1
    assert _files(part) == expected
    assert all(part.joinpath(n).stat().st_mtime_ns == t for n, t in before.items())
    sha = [json.loads((d / "meta.json").read_text())["sha256"] for d in (part, whole)]
    assert sha[0] == sha[1]
    log = [json.loads(line)["episode"] for line in (part / "explorer_log.jsonl").read_text().splitlines()]
    assert log == [0, 1, 2, 3, 4]  # one row per episode, no duplicates
    # nothing to do: no file touched, but the files are checked against meta.json
    summary = collect("walker", "random", steps, part, workers=2, seed=1, episode_length=T, progress=False)
    assert summary["new_episodes"] == 0 and _files(part) == expected
    victim = part / f"000004_{T}.npz"
    victim.write_bytes(victim.read_bytes()[:-10])
    _one_line_error(collect, "walker", "random", steps, part, workers=1, seed=1, episode_length=T, progress=False,
                    match=f"{victim.name} does not match its sha256 .* delete it and re-run")
    victim.unlink()
    _one_line_error(load_dataset, part, "walker", match=f"{victim.name} is missing")
    collect("walker", "random", steps, part, workers=1, seed=1, episode_length=T, progress=False)
    assert _files(part) == expected


def test_two_collections_into_one_directory_are_refused(tmp_path):
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".collect.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _one_line_error(collect, "walker", "random", T, out, workers=1, episode_length=T, progress=False,
                        match="another collection is writing")


def test_mismatched_arguments_on_an_existing_dataset_are_user_errors(walker_random, walker_exorl, tmp_path):
    kwargs = dict(workers=1, seed=3, episode_length=T, progress=False)
    _one_line_error(collect, "cheetah", "random", 50, walker_random, **kwargs, match="another domain")
    _one_line_error(collect, "walker", "rnd", 50, walker_random, explorer_config="tiny", **kwargs,
                    match="another explorer")
    _one_line_error(collect, "walker", "random", 50, walker_random, **{**kwargs, "seed": 4}, match="seed=4")
    _one_line_error(collect, "walker", "random", 50, walker_random, **{**kwargs, "episode_length": 10},
                    match="episode_length=10")
    _one_line_error(collect, "walker", "random", 50, walker_exorl / "buffer", **kwargs, match="no meta.json")
    _one_line_error(collect, "walker", "random", 0, tmp_path / "x", **kwargs, match="steps must be")
    _one_line_error(collect, "walker", "randm", 50, tmp_path / "x", **kwargs, match="Did you mean 'random'")
    _one_line_error(collect, "walker", "random", 50, tmp_path / "x", explorer_config="cpu", **kwargs,
                    match="takes no config")
    _one_line_error(collect, "walker", "rnd", 50, tmp_path / "x", explorer_config={"hiden_dim": 3}, **kwargs,
                    match="hidden_dim")


# ---- RND ----------------------------------------------------------------------------------------------------
def test_rnd_tiny_collects_logs_a_finite_intrinsic_reward_and_resumes_exactly(tmp_path):
    kwargs = dict(workers=1, seed=0, explorer_config=RND_TINY, episode_length=T, progress=False)
    whole = tmp_path / "whole"
    summary = collect("walker", "rnd", 6 * T, whole, **kwargs)
    assert summary["episodes"] == 6
    log = [json.loads(line) for line in (whole / "explorer_log.jsonl").read_text().splitlines()]
    assert [row["episode"] for row in log] == list(range(6))
    assert all(row["updates"] == 0 and row["intrinsic_reward"] is None for row in log[:3])  # seed frames
    trained = log[3:]
    assert all(row["updates"] > 0 for row in trained)
    for key in ("intrinsic_reward", "rnd_loss", "critic_loss", "actor_loss", "prediction_error_std"):
        assert all(math.isfinite(row[key]) for row in trained), key
    assert all(row["intrinsic_reward"] > 0 for row in trained)
    data = load_dataset(whole, "walker")
    assert len(data) == 6 * T and data.source == "b2fb"
    seed_actions, policy_actions = data.action[:3 * T], data.action[3 * T:]
    assert seed_actions.std() > 0.45  # uniform in [-1, 1] (std 0.58) during the seed frames
    assert np.abs(policy_actions).max() < 1  # then the actor's mean plus noise, clamped inside (-1, 1)

    # interrupted after 3 episodes, then after 4 with the checkpoint one episode behind the files (killed
    # between writing episode 3 and its checkpoint), then finished: equal to the uninterrupted run
    part = tmp_path / "part"
    collect("walker", "rnd", 3 * T, part, **kwargs)
    checkpoint = part / "explorer_state" / "worker_00.pt"
    shutil.copy(checkpoint, tmp_path / "behind.pt")
    collect("walker", "rnd", 4 * T, part, **kwargs)
    shutil.copy(tmp_path / "behind.pt", checkpoint)
    summary = collect("walker", "rnd", 6 * T, part, **kwargs)
    assert summary["new_episodes"] == 2
    assert _files(part) == _files(whole)
    rows = [json.loads(line) for line in (part / "explorer_log.jsonl").read_text().splitlines()]
    assert rows[3].get("recollected_identical") is True
    _one_line_error(collect, "walker", "rnd", 6 * T, part, **{**kwargs, "workers": 2}, match="workers=1")


# ---- the loader -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("drop_final", [False, True])
def test_loader_shifts_indices_like_onestep_fb(walker_random, drop_final):
    data = load_dataset(walker_random, "walker", drop_final_transition=drop_final)
    rows = T - 1 if drop_final else T
    assert len(data) == 3 * rows and data.transitions == 3 * T and data.source == "b2fb"
    assert data.sha256 == json.loads((walker_random / "meta.json").read_text())["sha256"]
    for e, path in enumerate(sorted(walker_random.glob("*.npz"))):
        with np.load(path) as z:
            obs, act, phys = z["observation"], z["action"], z["physics"]
            block = slice(e * rows, (e + 1) * rows)
            for t in range(rows):
                i = e * rows + t
                np.testing.assert_array_equal(data.obs[i], obs[t])
                np.testing.assert_array_equal(data.action[i], act[t + 1])
                np.testing.assert_array_equal(data.next_obs[i], obs[t + 1])
                np.testing.assert_array_equal(data.next_physics[i], phys[t + 1])
                if t + 2 <= T:
                    np.testing.assert_array_equal(data.next_action[i], act[t + 2])
                else:  # the final row: s' is the last state, no action was taken there ([OS]: zeros)
                    assert np.all(data.next_action[i] == 0) and data.last[i]
            for task in data.tasks:
                np.testing.assert_array_equal(data.rewards[task][block], z[f"reward_{task}"][1:rows + 1, 0])
            assert data.last[block].sum() == (0 if drop_final else 1)
    # skip / size select whole episodes as [OS] does
    assert load_dataset(walker_random, "walker", skip=T, size=T).files == (f"000001_{T}.npz",)
    # an episode that crosses `skip` is kept, one that crosses skip + size is not ([OS]'s rule)
    assert load_dataset(walker_random, "walker", skip=T // 2, size=2 * T).files == (f"000000_{T}.npz",
                                                                                     f"000001_{T}.npz")


def test_loader_relabels_an_exorl_download_from_physics(walker_random, walker_exorl):
    ours = load_dataset(walker_random, "walker")
    theirs = load_dataset(walker_exorl, "walker")  # finds buffer/, no reward_<task> keys, no meta.json
    assert theirs.source == "exorl" and theirs.meta is None
    for name in ("obs", "action", "next_obs", "next_action", "next_physics", "last"):
        np.testing.assert_array_equal(getattr(theirs, name), getattr(ours, name))
    for task in ours.tasks:
        np.testing.assert_array_equal(theirs.rewards[task], ours.rewards[task])


def test_split_takes_the_first_n_transitions_for_training_and_the_next_m_for_validation(walker_random):
    data = load_dataset(walker_random, "walker")
    train, val = split_dataset(data, 2 * T, T)
    assert train.files == (f"000000_{T}.npz", f"000001_{T}.npz") and val.files == (f"000002_{T}.npz",)
    np.testing.assert_array_equal(train.obs, data.obs[:2 * T])
    np.testing.assert_array_equal(val.next_obs, data.next_obs[2 * T:])
    assert train.sha256 == ds.dataset_sha256({f: data.meta["files"][f] for f in train.files})
    train, val = split_dataset(data, T + T // 2, T)  # whole episodes: the one crossing N goes to validation
    assert train.files == (f"000000_{T}.npz",) and val.files == (f"000001_{T}.npz",)
    _one_line_error(split_dataset, data, 3 * T, T, match=f"has {3 * T} transitions")


# ---- loader errors: one line each, naming the thing and the fix -----------------------------------------------
def test_loader_errors_missing_and_empty_directories(tmp_path):
    message = _one_line_error(load_dataset, tmp_path / "walker-rnd", "walker", match="no dataset at")
    assert "https://dl.fbaipublicfiles.com/exorl/walker/rnd.zip" in message and str(tmp_path / "walker-rnd") in message
    (tmp_path / "empty").mkdir()
    _one_line_error(load_dataset, tmp_path / "empty", "walker", match="holds no episode files")


def test_loader_errors_corrupt_and_truncated_files(walker_random, walker_exorl, tmp_path):
    exorl = tmp_path / "exorl"
    shutil.copytree(walker_exorl / "buffer", exorl)
    victim = sorted(exorl.glob("*.npz"))[1]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    _one_line_error(load_dataset, exorl, "walker", match=f"{victim.name} is corrupt or truncated")
    victim.write_bytes(b"not a zip file at all")
    _one_line_error(load_dataset, exorl, "walker", match=f"{victim.name} is corrupt or truncated")
    # in a dataset collected here, meta.json's hashes catch it first
    ours = tmp_path / "ours"
    shutil.copytree(walker_random, ours)
    victim = ours / f"000001_{T}.npz"
    victim.write_bytes(victim.read_bytes()[:100])
    _one_line_error(load_dataset, ours, "walker", match=f"{victim.name} does not match its sha256")
    _one_line_error(load_dataset, ours, "walker", verify=False, match=f"{victim.name} is corrupt or truncated")


def test_loader_errors_wrong_domain(walker_random, walker_exorl):
    _one_line_error(load_dataset, walker_random, "cheetah", match="holds a walker dataset .* not cheetah")
    message = _one_line_error(load_dataset, walker_exorl, "cheetah", match="is not a cheetah dataset")
    assert "obs 24" in message and "obs 17" in message and "walker" in message


def test_loader_errors_inconsistent_lengths(tmp_path):
    spec = DOMAINS["walker"]
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / f"20220101T000000_0_{T}.npz", observation=np.zeros((T + 1, spec.obs_dim), np.float32),
             action=np.zeros((T, spec.action_dim), np.float32), discount=np.ones((T + 1, 1), np.float32),
             physics=np.zeros((T + 1, spec.state_dim)))
    _one_line_error(load_dataset, bad, "walker", match=f"inconsistent array lengths in .*_0_{T}.npz.*action {T}")
    np.savez(bad / f"20220101T000000_0_{T}.npz", observation=np.zeros((T + 1, spec.obs_dim), np.float32),
             action=np.zeros((T + 1, spec.action_dim), np.float32), physics=np.zeros((T + 1, spec.state_dim)))
    (bad / f"20220101T000000_0_{T}.npz").rename(bad / f"20220101T000000_0_{T + 5}.npz")
    _one_line_error(load_dataset, bad, "walker", match=f"name says {T + 5} transitions")


# ---- command line ---------------------------------------------------------------------------------------------
def test_main_collect_prints_where_the_data_went(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main_collect(["--domain", "cheetah", "--explorer", "random", "--steps", "0.04k", "--episode-length",
                         str(T), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "2 episodes" in printed
    assert len(load_dataset(out, "cheetah")) == 2 * T
    assert main_collect(["--domain", "cheetah", "--explorer", "random", "--steps", "40", "--data-dir",
                         str(tmp_path / "d"), "--episode-length", str(T), "--workers", "1", "--no-progress"]) == 0
    # the default location is the one `b2fb run` grids use: <data>/dmc/<domain>-<explorer>[-len<L>]
    assert (tmp_path / "d" / "dmc" / f"cheetah-random-len{T}" / "meta.json").is_file()


@pytest.mark.parametrize("argv, match", [
    (["--domain", "walkr", "--explorer", "random", "--steps", "10"], "Did you mean 'walker'"),
    (["--domain", "walker", "--explorer", "ppo", "--steps", "10"], "invalid choice"),
    (["--domain", "walker", "--explorer", "random", "--steps", "lots"], "not a number of steps"),
    (["--domain", "walker", "--explorer", "random", "--steps", "0"], "steps must be"),
    (["--domain", "walker", "--explorer", "random", "--steps", "10", "--size", "cpu"], "does not apply"),
    (["--domain", "walker", "--explorer", "rnd", "--steps", "10", "--size", "huge"], "invalid choice"),
    (["--explorer", "random", "--steps", "10"], "required: --domain"),
])
def test_main_collect_bad_arguments_are_user_errors(argv, match, tmp_path):
    _one_line_error(main_collect, argv + ["--out", str(tmp_path / "x")], match=match)
