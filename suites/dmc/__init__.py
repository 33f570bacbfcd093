"""DeepMind Control suite: the zero-shot tasks of ExORL / the one-step FB paper (fb.md §5-6).

Tasks (registered here, built lazily by `suites.dmc.task:make_task`; ids use hyphens):
  walker      flip, run, stand, walk                         1000 steps x 0.025 s
  cheetah     run, run_backward, walk, walk_backward         1000 steps x 0.01 s
  quadruped   jump, run, stand, walk                         1000 steps x 0.02 s
  jaco        reach_{top,bottom}_{left,right}                 250 steps x 0.04 s
  point_mass_maze  reach_{top,bottom}_{left,right}           1000 steps x 0.02 s  (Touati et al.;
                                                             not in the one-step FB grid)
e.g. `dmc/walker-flip-v0`, `dmc/cheetah-run-backward-v0`, `dmc/jaco-reach-top-left-v1` (the version is the
domain's: `suites.dmc.domains`).
Tags: the 16 paper tasks carry {exorl, paper, cpu, state, <domain>}; the maze tasks {touati, state,
point_mass_maze}.

Zero-shot benchmark tasks, one per domain (`dmc/walker-zeroshot-v0`, ...; tags {zeroshot, <domain>}):
train once on the domain's reward-free data, evaluate every task (suites/dmc/zeroshot.py).
From pixels (`dmc/walker-zeroshot-pixels-v0`, ...; tags {zeroshot, pixels, <domain>}; walker, cheetah,
quadruped, jaco): the same data, split and protocol, observed as stacks of frames re-rendered from the
stored physics states (suites/dmc/pixels.py); kwargs image_size, frame_stack, camera, render_flags.

Modules (every heavy import lives there; this file imports only the registry):
  domains.py       the domains and tasks as plain data (dims, episode lengths, descriptions)
  rewards.py       every task's reward as a function of physics (point_mass_maze: physics and action)
  envs.py          per-domain dm_control environments; `DMCEnv` (flat float32 obs, actions in [-1, 1])
  jaco.py          the Jaco reach task on dm_control's composer arm (fixed targets)
  maze.py          the point-mass maze (model: point_mass_maze.xml)
  relabel.py       rewards of every task of a domain from stored physics states
  task.py          the registry entry point, `DMCTask`
  gym.py           `import suites.dmc.gym` registers every task with gymnasium:
                       import gymnasium, suites.dmc.gym
                       env = gymnasium.make("b2fb/dmc-walker-flip-v0")
Set `MUJOCO_GL=egl` before anything imports dm_control (the Makefile does).
"""
from suites.dmc.domains import DESCRIPTIONS, DOMAINS, pixel_task_id, task_id, zeroshot_task_id
from suites.registry import TaskSpec, register

ENTRY = "suites.dmc.task:make_task"
ZEROSHOT_ENTRY = "suites.dmc.zeroshot:make_zeroshot_task"
PIXEL_ENTRY = "suites.dmc.zeroshot:make_pixel_zeroshot_task"
# DrQ's cameras for the suite domains; jaco: ExORL's FRONT_CLOSE (suites/dmc/pixels.py CAMERAS, not imported
# here: this file stays import-light).  Render flags default to dm_control's (shadows and reflections on).
PIXEL_CAMERAS = {"walker": 0, "cheetah": 0, "quadruped": 2, "jaco": "front_close"}
PIXEL_DEFAULTS = {"image_size": 64, "frame_stack": 3, "render_flags": {}, "eval_episode_length": None}
# Every kwarg of the zero-shot entry point with its default, so a grid may override any of them.
ZEROSHOT_DEFAULTS = {"dataset": None, "data_root": None, "explorer": "rnd", "collect_size": "cpu",
                     "collect_steps": 0, "collect_episode_length": None, "train_size": 100_000, "val_size": 10_000, "inference_samples": 10_000,
                     "eval_episodes": 10, "eval_seed": 1, "gamma": 0.98, "tasks": None}

for _domain in DOMAINS.values():
    if _domain.group == "exorl":
        _tags = {"exorl", "paper", "cpu", "state", _domain.name}
    else:
        _tags = {"touati", "state", _domain.name}
    for _task in _domain.tasks:
        register(TaskSpec(task_id(_domain.name, _task), ENTRY, {"domain": _domain.name, "task": _task},
                          frozenset(_tags), DESCRIPTIONS[(_domain.name, _task)]))
    register(TaskSpec(zeroshot_task_id(_domain.name), ZEROSHOT_ENTRY,
                      {"domain": _domain.name, **ZEROSHOT_DEFAULTS},
                      frozenset({"zeroshot", _domain.name}),
                      f"{_domain.name}: zero-shot from reward-free data, evaluated on {', '.join(_domain.tasks)}"))
    if _domain.name in PIXEL_CAMERAS:
        register(TaskSpec(pixel_task_id(_domain.name), PIXEL_ENTRY,
                          {"domain": _domain.name, **ZEROSHOT_DEFAULTS, **PIXEL_DEFAULTS,
                           "camera": PIXEL_CAMERAS[_domain.name]},
                          frozenset({"zeroshot", "pixels", _domain.name}),
                          f"{_domain.name} from pixels (64x64, 3 frames, camera "
                          f"{PIXEL_CAMERAS[_domain.name]}): "
                          f"zero-shot, evaluated on {', '.join(_domain.tasks)}"))
