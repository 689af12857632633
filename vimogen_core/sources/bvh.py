"""BVH motion capture of any humanoid skeleton, retargeted onto the SMPL 22-joint skeleton.

1. Parse the file: hierarchy (joint names, parents, rest offsets, channels in the order written,
   so every joint may have its own rotation order and position channels) and the frame table.
   Every error names the file and the line.
2. Forward kinematics over the file's own hierarchy, vectorised over frames: each joint's world
   position and rotation. Position channels give the joint's translation on the axes they name in
   place of its OFFSET (exporters that write them on every joint, as Mixamo's, repeat the OFFSET
   there); rotations compose in channel order, R = R_first @ R_second @ R_third.
3. World frame: the up axis is the one from the ankles to the head in the rest pose (or given),
   turned onto +Z; the unit (m, cm, mm, inch, CMU's) is the one that makes the rest pose's ankle-to-head height
   closest to the project skeleton's (or given). The retargeted motion takes its size from the
   project skeleton, so the unit only decides which joints count as coincident (`COINCIDENT`).
4. Joint names -> SMPL-22 by the naming convention that recognises most of the file's joints
   (`CONVENTIONS`: SMPL, CMU, Mixamo, LAFAN1; namespace prefixes such as `mixamorig:` are
   dropped), overridden per joint by a JSON map {BVH joint name: SMPL-22 joint name}. Spine and
   collar joints the file lacks (or places on top of their parent, as CMU's LeftShoulder) are
   filled in (`_fill_missing`).
5. Retarget: every SMPL bone points where the file's mapped joints point, with the project
   skeleton's bone lengths. A joint with one child bone swings the file's own rotation of that
   joint (aligned through the rest poses, so an A-pose file and the T-pose skeleton agree) onto
   the bone direction, which keeps the file's twist; the pelvis and spine3 (three child bones
   each) take the rotation that best fits their bones. The root path is scaled by the ratio of
   the skeleton's leg length to the file's, so the feet land where the file's did.
6. Resample to 20 fps (slerp), canonicalise frame 0 (pelvis at x = y = 0, facing +Y) and put
   the lowest joint of the clip on the floor, as the DeepMimic clips are.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import forward_kinematics, rest_joints24
from vimogen_core.motion.motion import Motion, canonicalize, resample
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, PARENTS, bone_lengths, rest_offsets

UP_AXES = ("auto", "x", "y", "z")
# Metres per file unit. "cmu": the CMU mocap BVH conversions keep the ASF unit, 1/0.45 inch.
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254, "cmu": 0.0254 / 0.45}
# `units="auto"` takes the unit that makes the rest pose's ankle-to-head height closest (as a ratio)
# to the project skeleton's, and refuses a skeleton no unit brings within this factor of it.
HUMAN_HEIGHT_FACTOR = 2.0
# A spine or collar joint closer than this to its mapped parent in the rest pose gives no bone
# direction (CMU puts LeftShoulder on Spine1); it is filled in like a missing one.
COINCIDENT = 0.01  # metres
# Frame Time is printed with 6-8 digits; a rate this close (relative) to a whole number is that number
# (29.97 fps video is 1e-3 away from 30 and stays 29.97).
FPS_ROUNDING = 1e-4

_LEFT_RIGHT = (("left", "Left", "L"), ("right", "Right", "R"))


def _sided(table: dict[str, str]) -> dict[str, str]:
    """Expand {side}/{Side}/{S} in BVH names (left/Left/L) and {side} in SMPL names into both sides."""
    out = {}
    for bvh_name, smpl_name in table.items():
        for side, Side, S in _LEFT_RIGHT:
            out[bvh_name.format(side=side, Side=Side, S=S).lower()] = smpl_name.format(side=side) if smpl_name else None
    return out


# Normalised BVH joint name (lower case, namespace dropped) -> SMPL-22 joint, or None for a joint the
# convention knows but SMPL-22 has no place for (it still counts towards recognising the convention).
CONVENTIONS: dict[str, dict[str, str | None]] = {
    "smpl": {**{name: name for name in JOINT_NAMES}, **_sided({
        "{S}_Hip": "{side}_hip", "{S}_Knee": "{side}_knee", "{S}_Ankle": "{side}_ankle", "{S}_Foot": "{side}_foot",
        "{S}_Collar": "{side}_collar", "{S}_Shoulder": "{side}_shoulder", "{S}_Elbow": "{side}_elbow",
        "{S}_Wrist": "{side}_wrist", "{S}_Hand": None, "{side}_hand": None})},
    "cmu": {"hips": "pelvis", "lowerback": None, "spine": "spine1", "spine1": "spine3", "neck": None,
            "neck1": "neck", "head": "head", **_sided({
                "{S}HipJoint": None, "{Side}UpLeg": "{side}_hip", "{Side}Leg": "{side}_knee",
                "{Side}Foot": "{side}_ankle", "{Side}ToeBase": "{side}_foot", "{Side}Shoulder": "{side}_collar",
                "{Side}Arm": "{side}_shoulder", "{Side}ForeArm": "{side}_elbow", "{Side}Hand": "{side}_wrist",
                "{Side}FingerBase": None, "{Side}HandIndex1": None, "{S}Thumb": None})},
    "mixamo": {"hips": "pelvis", "spine": "spine1", "spine1": "spine2", "spine2": "spine3", "neck": "neck",
               "head": "head", **_sided({
                   "{Side}UpLeg": "{side}_hip", "{Side}Leg": "{side}_knee", "{Side}Foot": "{side}_ankle",
                   "{Side}ToeBase": "{side}_foot", "{Side}Shoulder": "{side}_collar", "{Side}Arm": "{side}_shoulder",
                   "{Side}ForeArm": "{side}_elbow", "{Side}Hand": "{side}_wrist"})},
    "lafan1": {"hips": "pelvis", "spine": "spine1", "spine1": "spine2", "spine2": "spine3", "neck": "neck",
               "head": "head", **_sided({
                   "{Side}UpLeg": "{side}_hip", "{Side}Leg": "{side}_knee", "{Side}Foot": "{side}_ankle",
                   "{Side}Toe": "{side}_foot", "{Side}Shoulder": "{side}_collar", "{Side}Arm": "{side}_shoulder",
                   "{Side}ForeArm": "{side}_elbow", "{Side}Hand": "{side}_wrist"})},
}
_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}
# SMPL joints a file may lack: spine joints between pelvis and neck, and the collars (with their shoulders).
SPINE_CHAIN = (0, 3, 6, 9, 12)
COLLARS = ((13, 16), (14, 17))
FILLABLE = frozenset(SPINE_CHAIN[1:-1]) | {collar for collar, _ in COLLARS}
REQUIRED = tuple(j for j in range(NUM_JOINTS) if j not in FILLABLE)
_CHILDREN = tuple(tuple(c for c, p in enumerate(PARENTS) if p == j) for j in range(NUM_JOINTS))
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class BvhClip:
    """A parsed BVH file: joints in file order (parents before children)."""

    path: str
    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray  # (J, 3) rest offsets, file units and axes
    channels: tuple[tuple[str, ...], ...]  # per joint, e.g. ("Xposition", ..., "Zrotation"), as written
    joint_lines: tuple[int, ...]  # the line declaring each joint
    frame_time: float
    frames: np.ndarray  # (N, total channels) float64

    @property
    def fps(self) -> float:
        """1 / Frame Time, read as the whole rate the writer meant when it is within printing precision
        of one (0.008333 -> 120, not 120.0048, so a 120 fps take of T frames keeps its length at 20 fps)."""
        rate = 1.0 / self.frame_time
        return float(round(rate)) if abs(rate - round(rate)) < FPS_ROUNDING * rate else rate


def _normalise(name: str) -> str:
    """'mixamorig:LeftArm' / 'mixamorig1_LeftArm' / 'LeftArm' -> 'leftarm'."""
    name = name.rsplit(":", 1)[-1]
    return re.sub(r"^mixamorig\d*_", "", name, flags=re.IGNORECASE).strip().lower()


def _number(path, line_no: int, token: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise MotionDataError(path, f"line {line_no}: {what} is not a number: {token!r}") from None
    if not np.isfinite(value):
        raise MotionDataError(path, f"line {line_no}: {what} is not finite: {token!r}")
    return value


_CHANNEL = re.compile(r"^[XYZ](position|rotation)$")


def read_bvh(path: str | os.PathLike) -> BvhClip:
    """Parse a BVH file (see the module docstring); MotionDataError names the file and line."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MotionDataError(path, "file not found") from None
    except UnicodeDecodeError as err:
        raise MotionDataError(path, f"not a text file ({err.reason} at byte {err.start})") from None
    lines = text.split("\n")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    joint_lines: list[int] = []
    stack: list[int] = []  # open blocks: a joint index, or -1 for an End Site
    pending: int | None = None  # declared, its "{" not yet seen
    seen_hierarchy = False
    motion_line = None
    for number, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if not tokens:
            continue
        opens = len(tokens) > 1 and tokens[-1] == "{"  # "JOINT Name {" on one line
        if opens:
            tokens = tokens[:-1]
        keyword = tokens[0].upper()
        if pending is not None and keyword != "{":
            raise MotionDataError(path, f"line {number}: expected '{{' to open the block declared on the line before")
        if not seen_hierarchy:
            if keyword != "HIERARCHY":
                raise MotionDataError(path, f"line {number}: expected HIERARCHY, found {raw.strip()[:40]!r}")
            seen_hierarchy = True
        elif keyword in ("ROOT", "JOINT"):
            if len(tokens) < 2:
                raise MotionDataError(path, f"line {number}: {tokens[0]} without a name")
            if (keyword == "ROOT") != (not stack):
                raise MotionDataError(path, f"line {number}: {'ROOT inside a joint' if stack else 'JOINT outside the ROOT'}")
            if names and not stack:
                raise MotionDataError(path, f"line {number}: a second ROOT; only one skeleton per file is read")
            if stack and stack[-1] < 0:
                raise MotionDataError(path, f"line {number}: a joint inside an End Site")
            name = " ".join(tokens[1:])
            if name in names:
                raise MotionDataError(path, f"line {number}: joint {name!r} declared twice (first on line "
                                            f"{joint_lines[names.index(name)]})")
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            joint_lines.append(number)
            pending = len(names) - 1
        elif keyword == "END":
            if not stack:
                raise MotionDataError(path, f"line {number}: End Site outside a joint")
            pending = -1
        elif opens:
            raise MotionDataError(path, f"line {number}: '{{' after {tokens[0]!r}")
        elif keyword == "{":
            if pending is None:
                raise MotionDataError(path, f"line {number}: '{{' without a ROOT, JOINT or End Site before it")
            stack.append(pending)
            pending = None
        elif keyword == "}":
            if not stack:
                raise MotionDataError(path, f"line {number}: '}}' closes nothing")
            stack.pop()
        elif keyword == "OFFSET":
            if not stack or len(tokens) != 4:
                raise MotionDataError(path, f"line {number}: OFFSET needs 3 numbers inside a joint block")
            if stack[-1] >= 0:
                offsets[stack[-1]] = [_number(path, number, t, "OFFSET") for t in tokens[1:]]
        elif keyword == "CHANNELS":
            if not stack or stack[-1] < 0:
                raise MotionDataError(path, f"line {number}: CHANNELS outside a joint block")
            declared = tokens[2:]
            if len(tokens) < 2 or not tokens[1].isdigit() or int(tokens[1]) != len(declared):
                raise MotionDataError(path, f"line {number}: CHANNELS count does not match the {len(declared)} channels named")
            bad = [c for c in declared if not _CHANNEL.match(c.capitalize())]
            if bad:
                raise MotionDataError(path, f"line {number}: unknown channel {bad[0]!r} (X/Y/Z position or rotation)")
            channels[stack[-1]] = tuple(c.capitalize() for c in declared)
        elif keyword == "MOTION":
            if stack or pending is not None or not names:
                raise MotionDataError(path, f"line {number}: MOTION before the hierarchy is complete "
                                            f"({'no joints' if not names else 'unclosed blocks'})")
            motion_line = number
            break
        else:
            raise MotionDataError(path, f"line {number}: unexpected {tokens[0]!r} in the hierarchy")
        if opens:
            stack.append(pending)
            pending = None
    if motion_line is None:
        where = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=1)  # the last line with text
        raise MotionDataError(path, f"line {where}: no MOTION section (the file ends "
                                    f"{'inside the hierarchy' if seen_hierarchy else 'before a HIERARCHY'})")
    n_frames, frame_time, first_frame_line = _motion_header(path, lines, motion_line)
    width = sum(len(c) for c in channels)
    if width == 0:
        raise MotionDataError(path, f"line {joint_lines[0]}: the hierarchy declares no CHANNELS, so frames hold no motion")
    frames = _frame_table(path, lines, first_frame_line, n_frames, width)
    return BvhClip(path, tuple(names), tuple(parents), np.asarray(offsets, dtype=np.float64), tuple(channels),
                   tuple(joint_lines), frame_time, frames)


def _motion_header(path: str, lines: list[str], motion_line: int) -> tuple[int, float, int]:
    """'Frames: N' and 'Frame Time: t' after MOTION -> (N, t, the 1-based line of frame 0)."""
    fields: dict[str, tuple[int, str]] = {}
    number = motion_line
    while len(fields) < 2:
        number += 1
        if number > len(lines):
            raise MotionDataError(path, f"line {len(lines)}: the MOTION section lacks 'Frames:' or 'Frame Time:'")
        raw = lines[number - 1].strip()
        if not raw:
            continue
        key, sep, value = raw.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("frames", "frame time"):
            raise MotionDataError(path, f"line {number}: expected 'Frames: N' then 'Frame Time: t', found {raw[:40]!r}")
        fields[key] = (number, value.strip())
    frames_line, frames_text = fields["frames"]
    if not frames_text.isdigit() or int(frames_text) < 2:
        raise MotionDataError(path, f"line {frames_line}: 'Frames:' must be a whole number of at least 2, got {frames_text!r}")
    time_line, time_text = fields["frame time"]
    frame_time = _number(path, time_line, time_text, "Frame Time")
    if frame_time <= 0:
        raise MotionDataError(path, f"line {time_line}: Frame Time must be positive, got {time_text}")
    return int(frames_text), frame_time, number + 1


def _frame_table(path: str, lines: list[str], first_line: int, n_frames: int, width: int) -> np.ndarray:
    """The (n_frames, width) table of the frame lines from `first_line` (1-based), blank lines
    skipped. Values per line are counted on the raw bytes, so a short or long line is found
    (and named) without a Python loop over the frames."""
    body = "\n".join(lines[first_line - 1:])
    if not body.strip():
        raise MotionDataError(path, f"line {len(lines)}: no frame lines after the MOTION header")
    data = np.frombuffer(body.encode("utf-8"), dtype=np.uint8)
    blank = (data == 32) | (data == 9) | (data == 13) | (data == 10)
    starts = np.flatnonzero(~blank & np.concatenate([[True], blank[:-1]]))  # first byte of each value
    newlines = np.flatnonzero(data == 10)
    n_lines = len(newlines) + 1
    counts = np.bincount(np.searchsorted(newlines, starts), minlength=n_lines)  # values per physical line (0-based)
    frame_rows = np.flatnonzero(counts)  # body line index of every frame
    if len(frame_rows) < n_frames:
        raise MotionDataError(path, f"line {first_line + n_lines - 1}: the file ends after {len(frame_rows)} of the "
                                    f"{n_frames} frames that 'Frames:' declares")
    if len(frame_rows) > n_frames:
        raise MotionDataError(path, f"line {first_line + int(frame_rows[n_frames])}: more frame lines than the "
                                    f"{n_frames} that 'Frames:' declares")
    wrong = np.flatnonzero(counts[frame_rows] != width)
    if len(wrong):
        row = int(wrong[0])
        raise MotionDataError(path, f"line {first_line + int(frame_rows[row])}: frame {row} has "
                                    f"{int(counts[frame_rows[row]])} values, the hierarchy declares {width} channels")
    try:
        table = np.array(body.split(), dtype=np.float64).reshape(n_frames, width)
    except ValueError:
        for row, index in enumerate(frame_rows):  # error path only: find the offending line
            for token in lines[first_line - 1 + index].split():
                _number(path, first_line + int(index), token, f"a value of frame {row}")
        raise MotionDataError(path, f"line {first_line}: the frame values are not all numbers") from None
    bad = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if len(bad):
        row = int(bad[0])
        column = int(np.flatnonzero(~np.isfinite(table[row]))[0])
        raise MotionDataError(path, f"line {first_line + int(frame_rows[row])}: frame {row} has a non-finite value "
                                    f"({table[row, column]}) in channel {column}")
    return table


def source_forward_kinematics(clip: BvhClip) -> tuple[torch.Tensor, torch.Tensor]:
    """World positions (N, J, 3) and rotations (N, J, 3, 3) of the file's joints, in its units and axes."""
    table = torch.as_tensor(clip.frames, dtype=torch.float64)
    n = len(table)
    local = torch.eye(3, dtype=torch.float64).repeat(n, len(clip.names), 1, 1)
    offsets = torch.as_tensor(clip.offsets, dtype=torch.float64).repeat(n, 1, 1)  # (N, J, 3)
    column = 0
    for joint, joint_channels in enumerate(clip.channels):
        for channel in joint_channels:
            axis = _AXES[channel[0].lower()]
            values = table[:, column]
            column += 1
            if channel.endswith("position"):
                offsets[:, joint, axis] = values
            else:
                local[:, joint] = local[:, joint] @ rot.rotation_about_axis(axis, torch.deg2rad(values))
    return forward_kinematics(local, torch.zeros(n, 3, dtype=torch.float64), offsets, clip.parents)


def read_joint_map(path: str | os.PathLike) -> dict[str, str]:
    """A JSON object {BVH joint name: SMPL-22 joint name}."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MotionDataError(path, "joint map not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MotionDataError(path, f"joint map is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise MotionDataError(path, 'joint map must be a JSON object of names, {"BVH joint": "smpl_joint", ...}')
    unknown = sorted(v for v in data.values() if v not in _INDEX)
    if unknown:
        raise MotionDataError(path, f"unknown SMPL-22 joint {unknown[0]!r}; choose from: {', '.join(JOINT_NAMES)}")
    return data


def map_joints(clip: BvhClip, joint_map: dict[str, str] | None = None,
               joint_map_path: str | os.PathLike | None = None) -> tuple[dict[int, int], str]:
    """{SMPL joint index: file joint index} and the convention used (see the module docstring)."""
    normalised = [_normalise(n) for n in clip.names]
    scores = {name: sum(n in table for n in normalised) for name, table in CONVENTIONS.items()}
    convention = max(scores, key=scores.get)  # ties: the first listed
    table = CONVENTIONS[convention] if scores[convention] else {}
    mapping = {}
    for index, name in enumerate(normalised):
        smpl = table.get(name)
        if smpl is not None and _INDEX[smpl] not in mapping:
            mapping[_INDEX[smpl]] = index
    for bvh_name, smpl in (joint_map or {}).items():
        matches = [i for i, n in enumerate(clip.names) if n == bvh_name or normalised[i] == _normalise(bvh_name)]
        if not matches:
            raise MotionDataError(joint_map_path, f"joint {bvh_name!r} is not in {clip.path}")
        mapping = {s: i for s, i in mapping.items() if i != matches[0]}  # the file joint moves to its new place
        mapping[_INDEX[smpl]] = matches[0]
    missing = [JOINT_NAMES[j] for j in REQUIRED if j not in mapping]
    if missing:
        label = f"the {convention} names" if scores[convention] else "no known naming convention"
        raise MotionDataError(clip.path, f"line {clip.joint_lines[0]}: no humanoid skeleton recognised under root "
                                         f"{clip.names[0]!r} ({label}; SMPL-22 joints not found: {', '.join(missing)}); "
                                         "name them in a joint map (--joint-map MAP.json, {\"BVH joint\": \"smpl_joint\"})")
    return mapping, convention


def rest_positions(clip: BvhClip) -> torch.Tensor:
    """(J, 3) joint positions of the file's rest pose (every rotation the identity), its units and axes."""
    identity = torch.eye(3, dtype=torch.float64).repeat(len(clip.names), 1, 1)
    return forward_kinematics(identity, torch.zeros(3, dtype=torch.float64), clip.offsets, clip.parents)[0]


def world_frame(clip: BvhClip, mapping: dict[int, int], up: str = "auto", units: str | float = "auto") -> tuple[torch.Tensor, float]:
    """(3, 3) turn of the file's axes to Z up, and metres per file unit (module docstring, step 3)."""
    rest = rest_positions(clip)
    ankles = (rest[mapping[_INDEX["left_ankle"]]] + rest[mapping[_INDEX["right_ankle"]]]) / 2
    stature = rest[mapping[_INDEX["head"]]] - ankles  # (3,) file axes and units
    if up == "auto":
        axis = int(stature.abs().argmax())
        if float(stature[axis].abs()) < 0.7 * float(stature.norm()):
            raise MotionDataError(clip.path, f"line {clip.joint_lines[0]}: the rest pose does not stand along an axis "
                                             "(ankles to head); give the up axis (--up y or --up z)")
        direction = torch.zeros(3, dtype=torch.float64)
        direction[axis] = torch.sign(stature[axis])
    elif up in _AXES:
        direction = torch.zeros(3, dtype=torch.float64)
        direction[_AXES[up]] = 1.0
    else:
        raise ValueError(f"up must be one of {UP_AXES}, got {up!r}")
    height = float(stature.norm())
    if isinstance(units, (int, float)):
        scale = float(units)
    elif units == "auto":
        skeleton = rest_joints24()
        skeleton_height = float(np.linalg.norm(skeleton[_INDEX["head"]] - skeleton[[_INDEX["left_ankle"], _INDEX["right_ankle"]]].mean(0)))
        misfit = {unit: abs(np.log(max(height * metres, 1e-12) / skeleton_height)) for unit, metres in UNITS.items()}
        best = min(misfit, key=misfit.get)
        if misfit[best] > np.log(HUMAN_HEIGHT_FACTOR):
            raise MotionDataError(clip.path, f"line {clip.joint_lines[0]}: an ankle-to-head height of {height:g} is no "
                                             f"human's in any of {', '.join(UNITS)}; give the unit (--units)")
        scale = UNITS[best]
    elif units in UNITS:
        scale = UNITS[units]
    else:
        raise ValueError(f"units must be 'auto', one of {sorted(UNITS)} or metres per file unit, got {units!r}")
    return rot.rotation_between(direction, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)), scale


def _fill_missing(positions: torch.Tensor, known: set[int]) -> torch.Tensor:
    """positions (..., 22, 3) with the FILLABLE joints the file lacks filled in. Spine joints go on
    the line between their nearest known neighbours, spaced as the skeleton's rest bones (the rest
    spine is nearly straight). A collar bends away from the spine3-shoulder line, so it is placed
    where the rest pose has it, turned with the upper body (the rotation that best takes the rest
    spine3 -> neck and -> shoulder directions onto the file's) and scaled to the file's shoulder."""
    lengths = np.linalg.norm(rest_offsets(), axis=1)
    positions = positions.clone()
    have = [k for k, j in enumerate(SPINE_CHAIN) if j in known]
    for a, b in zip(have[:-1], have[1:]):
        span = np.cumsum([lengths[SPINE_CHAIN[k]] for k in range(a + 1, b + 1)])
        start, end = positions[..., SPINE_CHAIN[a], :], positions[..., SPINE_CHAIN[b], :]
        for k, fraction in zip(range(a + 1, b), span[:-1] / span[-1]):
            positions[..., SPINE_CHAIN[k], :] = start + (end - start) * float(fraction)
    missing = [(collar, shoulder) for collar, shoulder in COLLARS if collar not in known]
    if missing:
        spine3 = _INDEX["spine3"]
        rest = torch.as_tensor(rest_joints24()[:NUM_JOINTS], dtype=positions.dtype)
        ends = [_INDEX["neck"], *(shoulder for _, shoulder in COLLARS)]
        unit = torch.nn.functional.normalize
        turn = rot.align_vectors(unit(rest[ends] - rest[spine3], dim=-1).expand_as(positions[..., ends, :]),
                                 unit(positions[..., ends, :] - positions[..., spine3 : spine3 + 1, :], dim=-1))
        for collar, shoulder in missing:
            scale = (positions[..., shoulder, :] - positions[..., spine3, :]).norm(dim=-1, keepdim=True) \
                / (rest[shoulder] - rest[spine3]).norm()
            positions[..., collar, :] = positions[..., spine3, :] + scale * (turn @ (rest[collar] - rest[spine3]))
    return positions


def _solve_rotations(targets: torch.Tensor, references: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """SMPL global rotations (..., 22, 3, 3) whose rest bones point along the bones of `targets`
    (..., 22, 3). A joint with several child bones takes the best-fitting rotation; one with a
    single child swings its reference rotation (None: its parent's) onto that bone; a leaf keeps
    its reference."""
    rest = torch.as_tensor(rest_offsets(), dtype=targets.dtype)
    unit = torch.nn.functional.normalize
    solved: list[torch.Tensor] = []
    for joint, parent in enumerate(PARENTS):
        children = list(_CHILDREN[joint])
        bones = targets[..., children, :] - targets[..., joint : joint + 1, :]  # (..., C, 3)
        if len(children) > 1:
            solved.append(rot.align_vectors(unit(rest[children], dim=-1).expand_as(bones), unit(bones, dim=-1)))
            continue
        reference = references[joint] if references[joint] is not None else solved[parent]
        if children:
            current = (reference @ rest[children[0], :, None])[..., 0]  # the bone as the reference has it
            reference = rot.rotation_between(current, bones[..., 0, :]) @ reference
        solved.append(reference)
    return torch.stack(solved, dim=-3)


def _smpl_targets(positions: torch.Tensor, rest: torch.Tensor, mapping: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor, set[int]]:
    """Mapped file joints -> SMPL-22 joint positions for the motion (N, 22, 3) and the rest pose
    (22, 3), with coincident and missing spine/collar joints filled; and the joints taken from the file."""
    used = dict(mapping)
    for joint in range(NUM_JOINTS):  # parents first, so a dropped joint's children compare with its parent
        ancestor = PARENTS[joint]
        while ancestor >= 0 and ancestor not in used:
            ancestor = PARENTS[ancestor]
        if joint in FILLABLE and joint in used and float((rest[used[joint]] - rest[used[ancestor]]).norm()) < COINCIDENT:
            del used[joint]
    order = torch.tensor([used.get(j, 0) for j in range(NUM_JOINTS)])
    return _fill_missing(positions[:, order], set(used)), _fill_missing(rest[order], set(used)), set(used)


def _leg_length(joints: torch.Tensor) -> float:
    """Hip-to-ankle length along the bones of (22, 3) joints, averaged over the two legs."""
    lengths = bone_lengths(joints)  # (21,): bone j ends at joint j + 1
    legs = [lengths[_INDEX[f"{side}_knee"] - 1] + lengths[_INDEX[f"{side}_ankle"] - 1] for side in ("left", "right")]
    return float(sum(legs)) / 2


def load_bvh(path: str | os.PathLike, joint_map: str | os.PathLike | dict[str, str] | None = None,
             up: str = "auto", units: str | float = "auto", fps: float = FPS) -> Motion:
    """A BVH file -> a canonicalised SMPL-22 Motion at `fps`, standing on z = 0 (module docstring).
    joint_map: a JSON file (or dict) {BVH joint: SMPL-22 joint} overriding the detected names;
    up: 'auto', 'x', 'y' or 'z'; units: 'auto', a name in UNITS or metres per file unit."""
    clip = read_bvh(path)
    map_path = None
    if joint_map is not None and not isinstance(joint_map, dict):
        map_path, joint_map = joint_map, read_joint_map(joint_map)
    mapping, _ = map_joints(clip, joint_map, map_path)
    positions, rotations = source_forward_kinematics(clip)  # (N, J, 3), (N, J, 3, 3)
    turn, scale = world_frame(clip, mapping, up, units)
    positions = positions @ turn.T * scale  # Z up, metres
    rest = rest_positions(clip) @ turn.T * scale
    rotations = turn @ rotations @ turn.T  # file-joint frames (rest axes turned with the world) -> Z-up world

    targets, rest_targets, from_file = _smpl_targets(positions, rest, mapping)
    # Rest-pose alignment: the SMPL rotations that pose the skeleton like the file's rest pose
    # (where every file rotation is the identity) relate the two joint frames.
    rest_rotations = _solve_rotations(rest_targets, [None] * NUM_JOINTS)  # (22, 3, 3)
    references = [rotations[:, mapping[j]] @ rest_rotations[j] if j in from_file else None for j in range(NUM_JOINTS)]
    global_rotations = _solve_rotations(targets, references)  # (N, 22, 3, 3)
    local = global_rotations.clone()
    local[:, 1:] = global_rotations[:, list(PARENTS[1:])].transpose(-1, -2) @ global_rotations[:, 1:]

    file_leg = _leg_length(rest_targets)
    if file_leg <= 0:
        raise MotionDataError(clip.path, f"line {clip.joint_lines[mapping[_INDEX['left_hip']]]}: the legs have no length in the rest pose")
    offsets = rest_offsets()
    pelvis = targets[:, 0] * (_leg_length(torch.as_tensor(rest_joints24()[:NUM_JOINTS])) / file_leg)
    motion = Motion.from_rotations(local, pelvis - torch.as_tensor(offsets[0]), clip.fps, offsets)
    return canonicalize(resample(motion, fps), set_floor=True)
