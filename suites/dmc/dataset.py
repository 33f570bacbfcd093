"""Reward-free dmc datasets in ExORL's format (fb.md §7.1): episode files, meta.json, and the loader.

One dataset is one directory.  `suites.dmc.collect` writes it; `load_dataset` reads it, or a real ExORL
download (https://dl.fbaipublicfiles.com/exorl/<domain>/<algo>.zip).

    <dir>/000000_1000.npz     one episode per file, named `<index:06d>_<T>.npz`: the episode index (from 0,
    <dir>/000001_1000.npz     in collection order) and T, the number of transitions (env steps) in it.
    ...                       The file holds T+1 rows (row 0: the reset state and a dummy action).
    <dir>/meta.json           what produced the files, and their hashes (written by suites.dmc.collect)
    <dir>/explorer_log.jsonl  one row of explorer statistics per episode (RND: intrinsic reward, losses)
    <dir>/explorer_state/     RND only: one checkpoint per worker, so that collection resumes and extends

ExORL names its files `<YYYYmmddTHHMMSS>_<index>_<T>.npz` (the time the episode was saved).  Ours drop
the timestamp, so that a file's name and bytes depend only on its content: a re-collected dataset is
byte-identical.  The loader reads both kinds of name (not mixed in one directory).  ExORL's zip puts the
episodes in `<dir>/buffer/`; the loader also looks there.

Episode file: a zip of .npy arrays, as `numpy.savez_compressed` writes it (ExORL's keys and dtypes), with
fixed zip timestamps so the bytes are reproducible:
    observation    [T+1, obs_dim]     float32  observation[0] is the reset observation
    action         [T+1, action_dim]  float32  action[t] (t >= 1) is the action whose step produced
                                               observation[t]; action[0] = 0 is a dummy
    discount       [T+1, 1]           float32  always 1 (DMC episodes end by time limit only)
    physics        [T+1, state_dim]   float64  physics.get_state() (qpos, qvel, act) beside observation[t]
    reward_<task>  [T+1, 1]           float32  beyond ExORL, one per task of the domain: r_task(physics[t]),
                                               computed online during collection (point_mass_maze: also
                                               from action[t]); equal to `suites.dmc.relabel` of the
                                               same rows, row 0 included (with its dummy zero action)
ExORL's own `reward` key (the reward of the URLB pre-training task, a relabelling target) is not written.

meta.json hashes: `files` maps each episode file name to the sha256 of its bytes; `sha256` is the sha256 of
the text made of one line `<file sha256>  <name>\\n` per episode file, sorted by name.  That is the output
of `sha256sum`, so `cd <dir> && LC_ALL=C sha256sum *.npz | sha256sum` prints the same digest.

The loader returns transitions in the one-step FB convention ([OS] `exorl_dataset_aggregator.py` +
`exorl_utils.load_dataset`, fb.md §7.1): for each episode with rows 0..T and each t = 0..T-1,

    obs[i] = observation[t]         action[i] = action[t+1]         next_obs[i] = observation[t+1]
    next_action[i] = action[t+2]    next_physics[i] = physics[t+1]  rewards[task][i] = r_task(physics[t+1])

i.e. (s_t, a_t, s_{t+1}, a_{t+1}) with the reward of the next state; each episode's last state is never an
`obs`.  The last row of an episode (t = T-1) has no a_{t+1} in the data: like [OS] it gets zeros there
(its `last` flag is True); `drop_final_transition=True` drops that row instead (T-1 rows per episode).
Splits count transitions in whole episodes, in file order, as [OS] does (first N train, next M validation).
"""
from __future__ import annotations

from suites.files import file_sha256  # noqa: E402  (re-exported)

import dataclasses
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from suites.dmc.domains import DOMAINS, Domain, get_domain
from suites.errors import UserError

__all__ = ["FORMAT_VERSION", "OfflineDataset", "episode_name", "encode_episode", "file_sha256",
           "dataset_sha256", "list_episode_files", "read_episode", "read_meta", "load_dataset",
           "split_dataset", "exorl_url", "EXORL_ALGOS"]

FORMAT_VERSION = 1
META = "meta.json"
EXPLORER_LOG = "explorer_log.jsonl"
EXPLORER_STATE = "explorer_state"
OURS_NAME = re.compile(r"^(\d{6,})_(\d+)\.npz$")
EXORL_NAME = re.compile(r"^(\d{8}T\d{6})_(\d+)_(\d+)\.npz$")
EXORL_ALGOS = ("aps", "diayn", "disagreement", "icm", "icm_apt", "proto", "random", "rnd", "smm")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so equal arrays give equal bytes


def default_dataset_dir(data_root: str | Path, domain: str, explorer: str, size: str | None = None,
                        episode_length: int | None = None) -> Path:
    """Where a collected dataset lives: <data root>/dmc/<domain>[-v<version>]-<explorer>[-<RND size>][-len<L>]
    (the version only from 1 on, so version-0 directories keep their names).  One naming for `b2fb collect`
    and for the grids, so data collected by hand is found by a bench."""
    from suites.dmc.domains import get_domain

    version = get_domain(domain).version
    name = f"{domain}-v{version}-{explorer}" if version else f"{domain}-{explorer}"
    if explorer == "rnd":
        name += f"-{size or 'cpu'}"
    if episode_length:
        name += f"-len{episode_length}"
    return Path(data_root) / "dmc" / name


def exorl_url(domain: str, algo: str = "rnd") -> str:
    return f"https://dl.fbaipublicfiles.com/exorl/{domain}/{algo}.zip"


# ---- episode files --------------------------------------------------------------------------------
def episode_name(index: int, length: int) -> str:
    """`<index:06d>_<length>.npz`; `length` = transitions T (the file has T+1 rows)."""
    return f"{index:06d}_{length}.npz"


def encode_episode(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of an episode file: what numpy.savez_compressed writes, but with fixed zip timestamps.
    Keys are written in the order given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(value), allow_pickle=False)
    return buffer.getvalue()




def dataset_sha256(file_hashes: dict[str, str]) -> str:
    """sha256 of the lines `<file sha256>  <name>` sorted by name (= `LC_ALL=C sha256sum *.npz | sha256sum`)."""
    text = "".join(f"{file_hashes[name]}  {name}\n" for name in sorted(file_hashes))
    return hashlib.sha256(text.encode()).hexdigest()


def _episode_length_of(name: str) -> int | None:
    m = OURS_NAME.match(name) or EXORL_NAME.match(name)
    return int(m.groups()[-1]) if m else None


def list_episode_files(directory: Path) -> tuple[list[Path], str]:
    """The episode files of a dataset directory in collection order, and their naming ("b2fb" or "exorl").

    Ours sort by index; ExORL's by (timestamp, index), i.e. the order they were saved in.  Any other
    `*.npz` name, or both namings in one directory, is a UserError.
    """
    files = [p for p in directory.glob("*.npz") if not p.name.startswith(".")]
    ours, exorl = [], []
    for p in files:
        if m := OURS_NAME.match(p.name):
            ours.append((int(m.group(1)), p))
        elif m := EXORL_NAME.match(p.name):
            exorl.append(((m.group(1), int(m.group(2))), p))
        else:
            raise UserError(f"unexpected episode file name {p} (expected <index>_<length>.npz as collected here, "
                            f"or ExORL's <timestamp>_<index>_<length>.npz): move it out of the dataset directory")
    if ours and exorl:
        raise UserError(f"{directory} mixes our episode names ({ours[0][1].name}) with ExORL's "
                        f"({exorl[0][1].name}): keep one dataset per directory")
    if exorl:
        return [p for _, p in sorted(exorl)], "exorl"
    return [p for _, p in sorted(ours)], "b2fb"


def _corrupt(path: Path, why: str, source: str) -> UserError:
    fix = ("delete it and re-run the same collect command to regenerate it" if source == "b2fb"
           else "re-download the dataset")
    return UserError(f"episode file {path} is corrupt or truncated ({why}): {fix}")


def read_episode(path: Path, data: bytes | None = None, source: str = "b2fb") -> dict[str, np.ndarray]:
    """All arrays of one episode file; a file numpy cannot read is a UserError naming it."""
    try:
        data = Path(path).read_bytes() if data is None else data
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as err:  # zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, ...
        detail = str(err).splitlines()[0] if str(err) else ""
        raise _corrupt(Path(path), f"{type(err).__name__}: {detail}".rstrip(": "), source) from None


def read_meta(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        return meta
    except (ValueError, OSError) as err:
        raise UserError(f"{path} is not valid JSON ({err}): delete the dataset directory and collect it "
                        f"again") from None


# ---- the loaded dataset -----------------------------------------------------------------------------
@dataclasses.dataclass
class OfflineDataset:
    """Transitions (s, a, s', a') with next-state physics and every task's reward r(s'), in file order.

    obs, next_obs [N, obs_dim] float32; action, next_action [N, action_dim] float32;
    next_physics [N, state_dim] float64; rewards {task: [N] float32}; last [N] bool (the row's s' is its
    episode's final state; its next_action is then zeros unless drop_final_transition was used).
    episode_lengths [E]: transitions T per episode (what splits count); episode_rows [E]: rows per episode.
    """

    domain: str
    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    next_action: np.ndarray
    next_physics: np.ndarray
    rewards: dict[str, np.ndarray]
    last: np.ndarray
    episode_lengths: np.ndarray
    episode_rows: np.ndarray
    files: tuple[str, ...]
    file_hashes: dict[str, str]  # sha256 of each loaded file
    sha256: str          # dataset_sha256 of the loaded files (= meta.json's sha256 when all files are loaded)
    source: str          # "b2fb" (collected here, rewards stored) or "exorl" (rewards relabelled from physics)
    meta: dict[str, Any] | None = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def transitions(self) -> int:
        """Transitions in ExORL's count (T per episode), the unit of `skip`/`size` and of splits."""
        return int(self.episode_lengths.sum())

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.rewards)

    def episodes(self, start: int, stop: int) -> "OfflineDataset":
        """Episodes [start, stop) as a new dataset (numpy views, no copy)."""
        offsets = np.concatenate([[0], np.cumsum(self.episode_rows)])
        lo, hi = int(offsets[start]), int(offsets[stop])
        files = self.files[start:stop]
        return dataclasses.replace(
            self, obs=self.obs[lo:hi], action=self.action[lo:hi], next_obs=self.next_obs[lo:hi],
            next_action=self.next_action[lo:hi], next_physics=self.next_physics[lo:hi],
            rewards={k: v[lo:hi] for k, v in self.rewards.items()}, last=self.last[lo:hi],
            episode_lengths=self.episode_lengths[start:stop], episode_rows=self.episode_rows[start:stop],
            files=files, file_hashes={f: self.file_hashes[f] for f in files},
            sha256=dataset_sha256({f: self.file_hashes[f] for f in files}))

    def __repr__(self) -> str:
        return (f"OfflineDataset({self.domain}, {len(self)} rows, {len(self.episode_lengths)} episodes, "
                f"source={self.source})")


def _select_episodes(lengths: list[int], skip: int, size: int | None) -> tuple[int, int]:
    """[OS]'s rule (exorl_dataset_aggregator.load): skip episodes while the running total of transitions is
    <= skip, then take episodes while it is <= skip + size.  So an episode that crosses `skip` is taken,
    one that crosses `skip + size` is not.  Returns the episode range [start, stop)."""
    total, start, stop = 0, None, len(lengths)
    for i, n in enumerate(lengths):
        total += n
        if total <= skip:
            continue
        if start is None:
            start = i
        if size is not None and total > skip + size:
            stop = i
            break
    if start is None:
        start = stop = len(lengths)
    return start, stop


def _missing_message(path: Path, domain: str) -> str:
    algo = path.name.split("-")[-1] if path.name.split("-")[-1] in EXORL_ALGOS else "rnd"
    return (f"no dataset at {path}: collect one with `b2fb collect --domain {domain} --explorer rnd --out {path}`, "
            f"or download {exorl_url(domain, algo)} and unzip it so that its episode files lie in {path} "
            f"(or {path}/buffer)")


def check_present(path, domain: str) -> Path:
    """Cheap up-front check that a dataset directory exists and holds episode files (no file is read)."""
    directory = _resolve_directory(Path(path).expanduser().resolve(), domain)
    if not any(directory.glob("*.npz")):
        raise UserError(f"{directory} holds no episode files (*.npz): " + _missing_message(Path(path), domain)
                        .split(": ", 1)[1])
    return directory


def _resolve_directory(path: Path, domain: str) -> Path:
    if not path.exists():
        raise UserError(_missing_message(path, domain))
    if not path.is_dir():
        raise UserError(f"dataset path {path} is a file, not a directory of episode files (*.npz): "
                        f"pass the directory that holds them")
    if not any(path.glob("*.npz")) and (path / "buffer").is_dir() and any((path / "buffer").glob("*.npz")):
        return path / "buffer"  # an unzipped ExORL download: <algo>/buffer/*.npz
    return path


def _dims_message(path: Path, domain: Domain, obs: int, act: int, phys: int) -> str:
    like = [d.name for d in DOMAINS.values() if (d.obs_dim, d.action_dim, d.state_dim) == (obs, act, phys)]
    hint = f" (those are {like[0]}'s)" if like else ""
    if domain.name == "jaco" and not like:  # suites/dmc/jaco.py: fixed targets, not ExORL's Duplo brick
        hint += " (ExORL's jaco data, with a movable target brick, do not fit this project's fixed-target jaco)"
    return (f"{path} is not a {domain.name} dataset: its episodes have obs {obs}, action {act}, physics {phys}{hint}, "
            f"but {domain.name} has obs {domain.obs_dim}, action {domain.action_dim}, physics {domain.state_dim}: "
            f"pass the matching --domain or the {domain.name} dataset's path")


def _check_episode(path: Path, arrays: dict[str, np.ndarray], spec: Domain, length: int, source: str,
                   dataset_dir: Path) -> None:
    for key in ("observation", "action", "physics"):
        if key not in arrays:
            raise _corrupt(path, f"no '{key}' array; it has {', '.join(sorted(arrays)) or 'none'}", source)
    for key in ("observation", "action", "physics"):
        if arrays[key].ndim != 2:
            raise _corrupt(path, f"'{key}' has shape {arrays[key].shape}, expected 2 dimensions", source)
    obs, act, phys = arrays["observation"].shape[1], arrays["action"].shape[1], arrays["physics"].shape[1]
    if (obs, act, phys) != (spec.obs_dim, spec.action_dim, spec.state_dim):
        raise UserError(_dims_message(dataset_dir, spec, obs, act, phys))
    rows = {k: v.shape[0] for k, v in arrays.items() if v.ndim >= 1}
    if len(set(rows.values())) != 1 or next(iter(rows.values())) != length + 1:
        listed = ", ".join(f"{k} {n}" for k, n in rows.items())
        fix = ("delete it and re-run the same collect command to regenerate it" if source == "b2fb"
               else "re-download the dataset")
        raise UserError(f"inconsistent array lengths in {path}: {listed} rows, but its name says {length} "
                        f"transitions ({length + 1} rows each): {fix}")
    if length < 1:
        raise _corrupt(path, "it holds no transition", source)


def load_dataset(path, domain: str, *, skip: int = 0, size: int | None = None,
                 drop_final_transition: bool = False, verify: bool = True,
                 check_only: bool = False) -> OfflineDataset | None:
    """Read an ExORL-style dataset directory of `domain` (see the module docstring for the convention).

    skip, size:  transitions (T per episode), [OS]'s `skip_size` / `dataset_size`: whole episodes, in file
                 order; only the selected files are read.
    drop_final_transition: drop each episode's last row (whose next_action does not exist) instead of
                 giving it a zero next_action as [OS] does.
    verify:      check each loaded file against meta.json's sha256 (datasets collected here).
    check_only:  read and check every selected file (hashes, arrays, dimensions) but build nothing and
                 relabel nothing; returns None.  Cheap enough for the driver to run before any trial.
    Rewards come from the files' reward_<task> arrays; files without them (an ExORL download) are
    relabelled from physics with suites.dmc.relabel (point_mass_maze: with the stored actions).
    """
    spec = get_domain(domain)
    if skip < 0 or (size is not None and size < 1):
        raise UserError(f"skip must be >= 0 and size >= 1 transitions, got skip={skip}, size={size}")
    root = Path(path).expanduser().resolve()
    directory = _resolve_directory(root, domain)
    files, _naming = list_episode_files(directory)
    meta = read_meta(directory)
    if not files:
        raise UserError(f"{directory} holds no episode files (*.npz): collect the dataset with `b2fb collect "
                        f"--domain {domain} --out {root}`, or unzip {exorl_url(domain)} into it")
    source = "b2fb" if meta is not None else "exorl"
    if meta is not None:
        _check_meta(meta, directory, spec, [p.name for p in files])
    lengths = [_episode_length_of(p.name) for p in files]
    start, stop = _select_episodes(lengths, skip, size)
    if start == stop:
        raise UserError(f"{directory} has {sum(lengths)} transitions in episodes of {lengths[0]}: skip={skip}, "
                        f"size={size} selects no whole episode; ask for at least one episode's worth")
    files, lengths = files[start:stop], lengths[start:stop]
    rows_per = [n - 1 if drop_final_transition else n for n in lengths]
    total = sum(rows_per)
    if total == 0:
        raise UserError(f"{directory}: every selected episode has 1 transition, none is left after dropping the "
                        f"final one: load with drop_final_transition=False")
    hashes = (meta or {}).get("files", {})

    out: dict[str, Any] = {}
    rewards: dict[str, np.ndarray] = {task: np.empty(total, np.float32) for task in spec.tasks}
    last = np.zeros(total, dtype=bool)
    loaded_hashes: dict[str, str] = {}
    row = 0
    for path_i, length, n_rows in zip(files, lengths, rows_per):
        data = path_i.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        loaded_hashes[path_i.name] = digest
        if verify and meta is not None and hashes.get(path_i.name) != digest:
            raise UserError(f"episode file {path_i} does not match its sha256 in {directory / META} (modified or "
                            f"corrupt): delete it and re-run the same collect command to regenerate it")
        arrays = read_episode(path_i, data, source)
        _check_episode(path_i, arrays, spec, length, source, directory)
        if check_only:
            absent = [t for t in spec.tasks if f"reward_{t}" not in arrays]
            if absent and source == "b2fb":
                raise _corrupt(path_i, f"no reward_{absent[0]} array", source)
            continue
        if not out:
            out = {"obs": np.empty((total, spec.obs_dim), np.float32),
                   "action": np.empty((total, spec.action_dim), np.float32),
                   "next_obs": np.empty((total, spec.obs_dim), np.float32),
                   "next_action": np.zeros((total, spec.action_dim), np.float32),
                   "next_physics": np.empty((total, spec.state_dim), np.float64)}
        observation, action, physics = arrays["observation"], arrays["action"], arrays["physics"]
        rows = slice(row, row + n_rows)
        out["obs"][rows] = observation[:n_rows]
        out["action"][rows] = action[1:n_rows + 1]
        out["next_obs"][rows] = observation[1:n_rows + 1]
        n_next = min(n_rows, length - 1)  # action[t+2] exists for t <= T-2
        out["next_action"][row:row + n_next] = action[2:n_next + 2]
        out["next_physics"][rows] = physics[1:n_rows + 1]
        if n_rows == length:
            last[row + n_rows - 1] = True
        missing = [t for t in spec.tasks if f"reward_{t}" not in arrays]
        for task in spec.tasks:
            if task not in missing:
                rewards[task][rows] = arrays[f"reward_{task}"].reshape(-1)[1:n_rows + 1]
        if missing:
            if source == "b2fb":
                raise _corrupt(path_i, f"no reward_{missing[0]} array", source)
            from suites.dmc.relabel import relabel

            actions = action[1:n_rows + 1] if spec.reward_uses_action else None
            for task, values in relabel(domain, physics[1:n_rows + 1], actions, tasks=missing).items():
                rewards[task][rows] = values
        row += n_rows
    if check_only:
        return None
    return OfflineDataset(domain=domain, rewards=rewards, last=last,
                          episode_lengths=np.asarray(lengths, dtype=np.int64),
                          episode_rows=np.asarray(rows_per, dtype=np.int64), files=tuple(p.name for p in files),
                          file_hashes=loaded_hashes, sha256=dataset_sha256(loaded_hashes), source=source,
                          meta=meta, **out)


def _check_meta(meta: dict, directory: Path, spec: Domain, names: list[str]) -> None:
    if meta.get("domain") != spec.name:
        raise UserError(f"{directory} holds a {meta.get('domain')} dataset (meta.json), not {spec.name}: "
                        f"pass --domain {meta.get('domain')} or the {spec.name} dataset's path")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{directory} was written in dataset format {meta.get('format_version')}, this code reads "
                        f"format {FORMAT_VERSION}: collect the dataset again")
    if meta.get("dmc_version", 0) != spec.version:
        raise UserError(f"{directory} holds {spec.name} v{meta.get('dmc_version', 0)} data; this code's {spec.name} is "
                        f"v{spec.version} (see suites/dmc/domains.py): collect the dataset again into a new directory")
    if meta.get("status") != "complete":
        raise UserError(f"dataset {directory} is incomplete ({len(names)} of {meta.get('episodes_target', '?')} "
                        f"episodes; collection was interrupted): re-run the same collect command to finish it")
    listed = meta.get("files") or {}
    missing = sorted(set(listed) - set(names))
    extra = sorted(set(names) - set(listed))
    if missing:
        raise UserError(f"{directory / missing[0]} is missing ({len(missing)} episode files listed in meta.json are "
                        f"gone): re-run the same collect command to regenerate them")
    if extra:
        raise UserError(f"{directory / extra[0]} is not listed in meta.json ({len(extra)} extra files): remove it, "
                        f"or re-run the collect command that produced it to finish the dataset")


def split_dataset(dataset: OfflineDataset, train_size: int, val_size: int) -> tuple[OfflineDataset, OfflineDataset]:
    """[OS]'s split (fb.md §7.1): train = the first `train_size` transitions, validation = the next
    `val_size`, in whole episodes by `_select_episodes`' rule: train takes the episodes that end by
    `train_size`; validation starts with the next one (an episode crossing `train_size` goes to
    validation) and takes those that end by `train_size + val_size`."""
    if train_size < 1 or val_size < 1:
        raise UserError(f"train and validation sizes must be at least 1 transition, got {train_size} and {val_size}")
    available = dataset.transitions
    if available < train_size + val_size:
        raise UserError(f"the {dataset.domain} dataset has {available} transitions; a split of {train_size} train + "
                        f"{val_size} validation needs {train_size + val_size}: collect more (--steps) or split less")
    lengths = [int(n) for n in dataset.episode_lengths]
    train = _select_episodes(lengths, 0, train_size)
    val = _select_episodes(lengths, train_size, val_size)
    if train[0] == train[1] or val[0] == val[1]:
        raise UserError(f"episodes of {lengths[0]} transitions cannot fill a split of {train_size} train + "
                        f"{val_size} validation transitions: use sizes of at least one episode each")
    return dataset.episodes(*train), dataset.episodes(*val)
