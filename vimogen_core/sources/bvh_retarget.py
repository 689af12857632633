"""BVH motion capture retargeted onto the SMPL 22-joint skeleton. Steps 1 and 2, parsing the file
and the forward kinematics of its own hierarchy, are `sources/bvh.py`'s; here:

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
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import rest_joints24
from vimogen_core.motion.motion import Motion, canonicalize, resample
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, PARENTS, bone_lengths, rest_offsets
from vimogen_core.sources.bvh import AXES, BvhClip, read_bvh, rest_positions, source_forward_kinematics

UP_AXES = ("auto", "x", "y", "z")
# Metres per file unit. "cmu": the CMU mocap BVH conversions keep the ASF unit, 1/0.45 inch.
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254, "cmu": 0.0254 / 0.45}
# `units="auto"` takes the unit that makes the rest pose's ankle-to-head height closest (as a ratio)
# to the project skeleton's, and refuses a skeleton no unit brings within this factor of it.
HUMAN_HEIGHT_FACTOR = 2.0
# A spine or collar joint closer than this to its mapped parent in the rest pose gives no bone
# direction (CMU puts LeftShoulder on Spine1); it is filled in like a missing one.
COINCIDENT = 0.01  # metres

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


def _normalise(name: str) -> str:
    """'mixamorig:LeftArm' / 'mixamorig1_LeftArm' / 'LeftArm' -> 'leftarm'."""
    name = name.rsplit(":", 1)[-1]
    return re.sub(r"^mixamorig\d*_", "", name, flags=re.IGNORECASE).strip().lower()


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
    elif up in AXES:
        direction = torch.zeros(3, dtype=torch.float64)
        direction[AXES[up]] = 1.0
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
