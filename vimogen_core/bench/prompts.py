"""Benchmark prompts: the published MBench files (read in place) or the project's own small set.

A `BenchPrompt` carries everything the runner needs for one prompt id: its group, the text, the
dimensions it is scored on, the frame count to generate and, for Motion_Condition_Consistency,
the candidate labels (the true label first, then its distractors).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vimogen_core.motion.metrics import MOTION_QUALITY_DIMENSIONS
from vimogen_core.errors import MotionDataError

POSE_DIMENSIONS = ("Body_Penetration", "Pose_Quality")
JUDGE_DIMENSIONS = ("Motion_Condition_Consistency", "Motion_Generalizability")
ALL_DIMENSIONS = MOTION_QUALITY_DIMENSIONS + POSE_DIMENSIONS + JUDGE_DIMENSIONS
# Dimensions that need only the motion, not its prompt.
MOTION_ONLY_DIMENSIONS = MOTION_QUALITY_DIMENSIONS + POSE_DIMENSIONS
# Which way is better. Dynamic_Degree has none: it says how much a motion moves, which should suit
# the prompt (too little is frozen, too much is erratic).
BETTER = {name: "lower" for name in MOTION_ONLY_DIMENSIONS} | {name: "higher" for name in JUDGE_DIMENSIONS} | {"Dynamic_Degree": None}

GROUPS = ("Motion_Quality", "Pose_Quality", "Motion_Condition_Consistency", "Motion_Generalizability")
GROUP_DIMENSIONS = {
    "Motion_Quality": MOTION_QUALITY_DIMENSIONS,
    "Pose_Quality": POSE_DIMENSIONS,
    "Motion_Condition_Consistency": ("Motion_Condition_Consistency",),
    "Motion_Generalizability": ("Motion_Generalizability",),
}
FPS = 20
DEFAULT_FRAMES = 100


@dataclass(frozen=True)
class BenchPrompt:
    global_id: int
    group: str
    text: str
    dimensions: tuple[str, ...]
    n_frames: int
    candidates: tuple[str, ...] = ()  # MCC only: true label first, then the distractors
    file_stem: str | None = None  # folder mode: the motion file's own name

    @property
    def key(self) -> str:
        """File stem of this prompt's motion: `{global_id}.npy` unless a stem is given."""
        return self.file_stem if self.file_stem is not None else str(self.global_id)


# --- the project's own prompt set (embedded default) -------------------------------------------

_OWN_MOTION_QUALITY = (
    ("a person walks forward at an easy pace, arms swinging loosely", 5),
    ("someone jogs in a wide circle and slows to a stop", 6),
    ("a person hops forward twice with both feet together", 4),
    ("the person steps back and delivers a high kick with the right leg", 4),
    ("a boxer throws two quick jabs and a cross", 4),
    ("a person turns all the way around on the spot", 4),
    ("someone squats down low and then rises back up", 5),
    ("a gymnast performs a cartwheel to the left", 5),
    ("a person crawls forward on hands and knees", 6),
    ("someone sways and bounces to music, shifting weight from foot to foot", 6),
)
_OWN_POSE_QUALITY = (
    ("a person raises both arms above the head and bends the torso to the left", 5),
    ("someone steps into a deep lunge with the left leg forward", 5),
    ("a person balances on the right leg with both arms stretched out to the sides", 5),
    ("the person folds forward and reaches down to touch the toes", 5),
    ("someone lowers onto the right knee and rests a hand on the other knee", 5),
    ("a person crosses the arms and twists the upper body to the right", 4),
)
# Short action labels; each MCC prompt's distractors are the other labels of this pool.
_OWN_ACTION_LABELS = (
    "walking", "running", "jumping", "kicking", "punching", "spinning in place", "doing a backflip",
    "doing a cartwheel", "crawling", "rolling on the floor", "dancing", "getting up from the ground",
    "sitting on a chair", "waving hello", "climbing stairs", "throwing a ball", "swimming",
    "lifting a box", "sweeping the floor", "drinking from a cup",
)
_OWN_MCC_LABELS = (
    "walking", "running", "jumping", "kicking", "punching", "spinning in place", "crawling",
    "doing a cartwheel",
)
_OWN_GENERALIZABILITY = (
    ("a person climbs an invisible ladder, hand over hand", 5),
    ("someone paddles a canoe while kneeling", 6),
    ("a person skips over a jump rope several times", 4),
    ("a mime hauls a heavy rope toward the chest, leaning back", 5),
    ("someone shovels snow, tossing each load over the shoulder", 6),
    ("a person ducks under a low branch and keeps walking", 5),
)


def _distractors(label: str, count: int = 9) -> tuple[str, ...]:
    """The `count` labels that follow `label` in the pool (wrapping), never the label itself."""
    pool = _OWN_ACTION_LABELS
    start = pool.index(label)
    return tuple(pool[(start + k) % len(pool)] for k in range(1, count + 1))


def builtin_prompts() -> list[BenchPrompt]:
    """The project's own 30-prompt set with MBench's four groups (its own wording)."""
    prompts: list[BenchPrompt] = []

    def add(group: str, text: str, seconds: int, candidates: tuple[str, ...] = ()) -> None:
        prompts.append(
            BenchPrompt(len(prompts), group, text, GROUP_DIMENSIONS[group], seconds * FPS, candidates)
        )

    for text, seconds in _OWN_MOTION_QUALITY:
        add("Motion_Quality", text, seconds)
    for text, seconds in _OWN_POSE_QUALITY:
        add("Pose_Quality", text, seconds)
    for label in _OWN_MCC_LABELS:
        add("Motion_Condition_Consistency", label, 5, (label,) + _distractors(label))
    for text, seconds in _OWN_GENERALIZABILITY:
        add("Motion_Generalizability", text, seconds)
    return prompts


# --- the published files -----------------------------------------------------------------------


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MotionDataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MotionDataError(path, f"not readable JSON ({err})") from None
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise MotionDataError(path, "expected a JSON list of objects")
    return data


def load_published_prompts(prompts_path: str | os.PathLike, eval_info_path: str | os.PathLike | None = None) -> list[BenchPrompt]:
    """Read MBench_final.json (and MBench_eval_info.json for dimensions and frame counts).

    Without the eval-info file every prompt gets its group's dimensions and
    `motion_duration` seconds x 20 frames.
    """
    prompts_path = Path(prompts_path)
    entries = _read_json_list(prompts_path)
    by_id: dict[int, dict] = {}
    for index, entry in enumerate(entries):
        try:
            global_id = int(entry["global_id"])
            group, text = str(entry["dimension"]), str(entry["prompt"])
        except (KeyError, TypeError, ValueError) as err:
            raise MotionDataError(prompts_path, f"entry {index}: missing or bad field {err}") from None
        if group not in GROUPS:
            raise MotionDataError(prompts_path, f"entry {index}: unknown group {group!r}")
        if not text.strip():
            raise MotionDataError(prompts_path, f"entry {index}: empty prompt")
        by_id[global_id] = entry

    dimensions: dict[int, list[str]] = {}
    frames: dict[int, int] = {}
    if eval_info_path is not None:
        eval_info_path = Path(eval_info_path)
        for index, entry in enumerate(_read_json_list(eval_info_path)):
            try:
                global_id, dimension = int(entry["id"]), str(entry["dimension"])
                n_frames = int(entry["motion_duration"])
            except (KeyError, TypeError, ValueError) as err:
                raise MotionDataError(eval_info_path, f"entry {index}: missing or bad field {err}") from None
            if dimension not in ALL_DIMENSIONS:
                raise MotionDataError(eval_info_path, f"entry {index}: unknown dimension {dimension!r}")
            if global_id not in by_id:
                raise MotionDataError(eval_info_path, f"entry {index}: id {global_id} is not in {prompts_path.name}")
            dimensions.setdefault(global_id, []).append(dimension)
            frames[global_id] = n_frames

    prompts = []
    for global_id in sorted(by_id):
        entry = by_id[global_id]
        group = entry["dimension"]
        candidates: tuple[str, ...] = ()
        if group == "Motion_Condition_Consistency":
            distractors = entry.get("auxiliary_info") or []
            if not isinstance(distractors, list) or not distractors:
                raise MotionDataError(prompts_path, f"id {global_id}: MCC prompt without distractor labels")
            candidates = (str(entry["prompt"]),) + tuple(str(d) for d in distractors)
        n_frames = frames.get(global_id) or int(float(entry.get("motion_duration", DEFAULT_FRAMES / FPS)) * FPS)
        prompts.append(
            BenchPrompt(
                global_id=global_id,
                group=group,
                text=str(entry["prompt"]),
                dimensions=tuple(dimensions.get(global_id, GROUP_DIMENSIONS[group])),
                n_frames=n_frames,
                candidates=candidates,
            )
        )
    return prompts


def select_dimensions(prompts: Sequence[BenchPrompt], dimensions: Sequence[str] | None) -> list[BenchPrompt]:
    """Keep only the requested dimensions (and the prompts that still have one)."""
    if dimensions is None:
        return list(prompts)
    unknown = set(dimensions) - set(ALL_DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown MBench dimension(s) {sorted(unknown)}; choose from {list(ALL_DIMENSIONS)}")
    wanted = set(dimensions)
    kept = []
    for prompt in prompts:
        chosen = tuple(d for d in prompt.dimensions if d in wanted)
        if chosen:
            kept.append(replace(prompt, dimensions=chosen))
    return kept
