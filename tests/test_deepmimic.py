"""The 15 built-in DeepMimic clips: retargeting, resampling, canonicalisation, captions, bad files."""
import json

import numpy as np
import pytest
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion.skeleton import FPS, LEFT_FOOT, RIGHT_FOOT, bone_lengths
from vimogen_core.sources.deepmimic import (
    builtin_clip_names, builtin_clip_path, load_builtin_clip, load_builtin_clips, load_deepmimic_file,
)


def test_all_fifteen_clips_convert_with_constant_bones_and_facing():
    clips = load_builtin_clips()
    assert len(clips) == 15
    for clip in clips:
        motion = clip.motion
        frames = json.loads(builtin_clip_path(clip.name).read_text())["Frames"]
        duration = sum(f[0] for f in frames[:-1])
        assert motion.fps == FPS
        assert motion.n_frames == int(np.floor(duration * FPS + 1e-6)) + 1, clip.name
        assert float(bone_lengths(motion.joints).std(0).max()) < 1e-3, clip.name
        across = motion.joints[0, 2] - motion.joints[0, 1]
        assert abs(float(across[1])) < 1e-9 and float(across[0]) > 0, clip.name  # frame 0 faces +Y
        assert motion.features().shape == (motion.n_frames - 1, 276)
        assert torch.isfinite(motion.features()).all()
        assert len(clip.captions) >= 3 and all(c.strip() for c in clip.captions)
        assert len(clip.video_caption) > 80


def test_feet_touch_the_floor_in_the_lowest_frames():
    for name in ("walk", "run", "jump"):
        joints = load_builtin_clip(name).motion.joints
        feet_z = joints[:, [LEFT_FOOT, RIGHT_FOOT], 2].min(dim=1).values  # (T,)
        lowest = torch.sort(feet_z).values[:3]
        assert float(lowest.max()) < 0.03, name
        assert float(joints[..., 2].min()) > -1e-9, name


def test_upright_clip_has_a_plausible_body():
    joints = load_builtin_clip("walk").motion.joints
    head_height = joints[:, 15, 2]
    assert 1.35 < float(head_height.mean()) < 1.75
    assert float(joints[:, 0, 2].mean()) > 0.75  # pelvis well above the feet
    forward = joints[-1, 0, :2] - joints[0, 0, :2]
    assert float(forward[1]) > 0.5 * float(forward.norm())  # walks roughly towards +Y


def test_looping_lengthens_clips_without_breaking_them():
    short = load_builtin_clip("walk").motion
    long = load_builtin_clip("walk", min_frames=120).motion
    assert long.n_frames >= 120
    step = (long.joints[1:] - long.joints[:-1]).norm(dim=-1).max()
    base = (short.joints[1:] - short.joints[:-1]).norm(dim=-1).max()
    assert float(step) < 1.1 * float(base)  # no jump at cycle seams
    assert float(long.joints[-1, 0, 1]) > 3 * float(short.joints[-1, 0, 1])  # keeps walking forward


def test_bad_files_name_the_file_and_reason(tmp_path):
    with pytest.raises(MotionDataError, match="unknown built-in clip"):
        load_builtin_clip("moonwalk")
    cases = {
        "truncated.txt": '{"Loop": "wrap", "Frames": [[0.03, 0.0',
        "noframes.txt": '{"Loop": "wrap"}',
        "short_rows.txt": '{"Frames": [[0.03, 1, 2], [0.03, 1, 2]]}',
        "nan.txt": json.dumps({"Frames": [[0.03] + [0.0] * 43, [0.03] + [float("nan")] * 43]}).replace("NaN", "NaN"),
    }
    reasons = {"truncated.txt": "not valid JSON", "noframes.txt": "no 'Frames'", "short_rows.txt": "44 numbers",
               "nan.txt": "non-finite"}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(MotionDataError) as err:
            load_deepmimic_file(path)
        assert str(path) in str(err.value) and reasons[name] in str(err.value)
