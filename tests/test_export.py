"""Exports other tools read back: joints .npy, SMPL .npz, BVH (checked with the PyPI `bvh`
parser and our own FK from its channels), and headless MP4/GIF/PNG renders."""
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from bvh import Bvh
from scipy.spatial.transform import Rotation

from vimogen_core.motion.export import Z_UP_TO_Y_UP, animated_joints, save_bvh, save_joints_npy, save_smpl_npz
from vimogen_core.motion.motion import Motion
from vimogen_core.motion.render import render_frames_png, render_motion
from vimogen_core.motion.representation import features_to_joints, features_to_rotations
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES
from vimogen_core.sources.amass import load_amass_npz
from vimogen_core.sources.deepmimic import load_builtin_clip


def _bvh_joint_positions(text: str) -> tuple[np.ndarray, Bvh]:
    """Forward kinematics from a parsed BVH's offsets and channels -> (T, 22, 3) in file order of JOINT_NAMES."""
    parsed = Bvh(text)
    global_rot, position = {}, {}
    for name in parsed.get_joints_names():  # parents come before their children
        channels = parsed.joint_channels(name)
        values = np.asarray(parsed.frames_joint_channels(name, channels), dtype=np.float64)
        rotation_channels = [c for c in channels if c.endswith("rotation")]
        order = "".join(c[0] for c in rotation_channels)  # BVH lists intrinsic rotations, outermost first
        local = Rotation.from_euler(order, values[:, [channels.index(c) for c in rotation_channels]],
                                    degrees=True).as_matrix()
        parent = parsed.joint_parent(name)
        if parent is None:
            global_rot[name] = local
            position[name] = values[:, [channels.index(f"{a}position") for a in "XYZ"]]
        else:
            offset = np.asarray(parsed.joint_offset(name), dtype=np.float64)
            global_rot[name] = global_rot[parent.name] @ local
            position[name] = position[parent.name] + global_rot[parent.name] @ offset
    return np.stack([position[n] for n in JOINT_NAMES], axis=1), parsed


@pytest.mark.parametrize("clip", ["walk", "cartwheel", "backflip"])
def test_bvh_read_back_by_an_independent_parser_gives_the_same_joints(clip, tmp_path):
    motion = load_builtin_clip(clip).motion
    decoded = motion.features().double()  # also the path the CLI takes: features, no skeleton offsets
    local, _ = features_to_rotations(decoded)
    from_features = Motion(local, features_to_joints(decoded), float(FPS))
    for name, source, expected in (("skeleton", motion, motion.joints), ("features", from_features, from_features.joints)):
        path = save_bvh(tmp_path / f"{clip}_{name}.bvh", source)
        joints, parsed = _bvh_joint_positions(path.read_text())
        assert parsed.nframes == source.n_frames and abs(parsed.frame_time - 1 / FPS) < 1e-9
        assert np.abs(joints - expected.numpy() @ Z_UP_TO_Y_UP.T).max() < 1e-3, (clip, name)
        # Every joint's Euler order keeps its middle angle away from gimbal lock.
        for joint in parsed.get_joints_names():
            channels = [c for c in parsed.joint_channels(joint) if c.endswith("rotation")]
            middle = np.asarray(parsed.frames_joint_channels(joint, [channels[1]]), dtype=float)
            assert np.abs(middle).max() < 85.0, (clip, joint)


def test_animated_joints_are_what_a_bvh_of_the_features_animates(tmp_path):
    """Features whose rotation channels disagree with their positions (as generated ones do): the
    BVH, read back, moves the joints `animated_joints` gives, not the position channels'."""
    feats = load_builtin_clip("walk", min_frames=61).motion.features().numpy()[:60]
    rng = np.random.default_rng(0)
    feats[:, :126] += rng.normal(0, 0.3, (1, 126)) + rng.normal(0, 0.1, (60, 126))  # 21 bent rot6d
    decoded = torch.from_numpy(feats.astype(np.float64))
    local, _ = features_to_rotations(decoded)
    joints, _ = _bvh_joint_positions(save_bvh(tmp_path / "bent.bvh", Motion(local, features_to_joints(decoded),
                                                                              float(FPS))).read_text())
    animated = animated_joints(feats) @ Z_UP_TO_Y_UP.T
    assert np.abs(joints - animated).max() < 1e-3
    assert np.median(np.linalg.norm(animated - features_to_joints(feats) @ Z_UP_TO_Y_UP.T, axis=-1)) > 0.05


def test_joints_npy_and_smpl_npz_exports(tmp_path):
    motion = load_builtin_clip("jump").motion
    feats = motion.features().numpy()
    joints_path = save_joints_npy(tmp_path / "out" / "jump_joints.npy", motion.joints)
    saved = np.load(joints_path)
    assert saved.dtype == np.float32 and np.abs(saved - motion.joints.numpy()).max() < 1e-6
    with pytest.raises(ValueError, match="shape"):
        save_joints_npy(tmp_path / "bad.npy", np.zeros((5, 21, 3)))

    npz_path = save_smpl_npz(tmp_path / "jump_smpl.npz", feats)
    with np.load(npz_path, allow_pickle=False) as data:
        assert data["poses"].shape == (len(feats), 72) and data["trans"].shape == (len(feats), 3)
        assert data["betas"].shape == (10,) and str(data["gender"]) == "neutral"
        assert float(data["mocap_framerate"]) == FPS
    back = load_amass_npz(npz_path)  # the AMASS reader takes our export
    assert float((back.joints - torch.as_tensor(feats[:, 126:192]).reshape(-1, 22, 3)).abs().max()) < 1e-4


def test_renders_have_one_frame_per_motion_frame(tmp_path):
    joints = load_builtin_clip("walk").motion.joints.numpy()
    gif = render_motion(joints, tmp_path / "walk.gif", title="walk")
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == len(joints) and frames.shape[-1] in (3, 4)
    assert iio.immeta(gif)["duration"] == 1000 / FPS
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0
    mp4 = render_motion(joints, tmp_path / "walk.mp4")
    reader = imageio.get_reader(mp4)
    assert reader.count_frames() == len(joints) and reader.get_meta_data()["fps"] == FPS
    reader.close()
    strip = iio.imread(render_frames_png(joints, tmp_path / "walk.png", n=4))
    assert strip.shape[1] == 4 * strip.shape[0]
    # The figure is drawn: many non-white pixels in every panel.
    panels = np.split(strip[..., :3], 4, axis=1)
    assert all((panel.min(axis=-1) < 128).sum() > 200 for panel in panels)
    with pytest.raises(ValueError, match="mp4 or .gif"):
        render_motion(joints, tmp_path / "walk.avi")
