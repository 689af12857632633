"""GLB export read back by two independent clients: pygltflib (the node hierarchy evaluated here
from the file's own transforms and animation keys) and Blender's glTF importer (headless). Both
must give the clip's joints within 1 mm on every frame."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh
from pygltflib import GLTF2
from scipy.spatial.transform import Rotation

from vimogen_core.body.procedural import build_procedural_smpl
from vimogen_core.motion.export import Z_UP_TO_Y_UP, export_features
from vimogen_core.motion.kinematics import rest_joints24
from vimogen_core.motion.motion import Motion
from vimogen_core.motion.representation import features_to_joints
from vimogen_core.motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, PARENTS
from vimogen_core.motion.gltf import save_glb
from vimogen_core.sources.deepmimic import load_builtin_clip

TOLERANCE = 1e-3  # metres
_NUMPY_TYPE = {5126: np.float32, 5125: np.uint32, 5121: np.uint8}
_WIDTH = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _accessor(gltf: GLTF2, index: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    data = gltf.binary_blob()[view.byteOffset + (accessor.byteOffset or 0):][:view.byteLength]
    width = _WIDTH[accessor.type]
    array = np.frombuffer(data, dtype=_NUMPY_TYPE[accessor.componentType], count=accessor.count * width)
    return array.reshape(accessor.count, width) if width > 1 else array


def _node_world_positions(gltf: GLTF2) -> np.ndarray:
    """(T, nodes, 3) world positions of the skeleton nodes at each animation key, glTF's Y-up world:
    each node's rest translation/rotation, overridden by its animated channels, composed down the
    hierarchy from the scene roots."""
    animation = gltf.animations[0]
    times = _accessor(gltf, animation.samplers[0].input)
    n_nodes = len(gltf.nodes)
    rotation = np.tile([0.0, 0.0, 0.0, 1.0], (len(times), n_nodes, 1))
    translation = np.zeros((len(times), n_nodes, 3))
    for i, node in enumerate(gltf.nodes):
        rotation[:, i] = node.rotation or [0.0, 0.0, 0.0, 1.0]
        translation[:, i] = node.translation or [0.0, 0.0, 0.0]
    for channel in animation.channels:
        sampler = animation.samplers[channel.sampler]
        assert np.array_equal(_accessor(gltf, sampler.input), times)
        values = _accessor(gltf, sampler.output)
        (rotation if channel.target.path == "rotation" else translation)[:, channel.target.node] = values
    world_rot = np.zeros((len(times), n_nodes, 3, 3))
    world_pos = np.zeros((len(times), n_nodes, 3))
    todo = [(root, None) for root in gltf.scenes[gltf.scene].nodes]
    while todo:
        i, parent = todo.pop()
        local_rot = Rotation.from_quat(rotation[:, i]).as_matrix()  # x y z w, glTF's order
        if parent is None:
            world_rot[:, i], world_pos[:, i] = local_rot, translation[:, i]
        else:
            world_rot[:, i] = world_rot[:, parent] @ local_rot
            world_pos[:, i] = world_pos[:, parent] + (world_rot[:, parent] @ translation[:, i, :, None])[..., 0]
        todo.extend((child, i) for child in gltf.nodes[i].children or [])
    return world_pos


@pytest.fixture(scope="module")
def cartwheel(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The CLI's path: features -> GLB with the body; and the joints the features hold (Z up)."""
    feats = load_builtin_clip("cartwheel").motion.features().numpy()
    path = tmp_path_factory.mktemp("glb") / "cartwheel.glb"
    export_features(feats, "glb", str(path), body=build_procedural_smpl)
    return path, features_to_joints(feats.astype(np.float64))


@pytest.mark.parametrize("clip", ["walk", "cartwheel", "backflip"])
def test_glb_read_back_by_pygltflib_gives_the_joints(clip, tmp_path):
    motion = load_builtin_clip(clip).motion
    feats = motion.features().numpy()
    path = tmp_path / f"{clip}.glb"
    export_features(feats, "glb", str(path))
    gltf = GLTF2().load(str(path))
    world = _node_world_positions(gltf)[:, :NUM_JOINTS] @ Z_UP_TO_Y_UP  # Y up back to Z up
    assert world.shape[0] == len(feats)
    assert np.abs(world - features_to_joints(feats.astype(np.float64))).max() < TOLERANCE, clip
    # The Motion's own skeleton (no offsets estimated) gives its FK joints.
    save_glb(tmp_path / "skeleton.glb", motion)
    world = _node_world_positions(GLTF2().load(str(tmp_path / "skeleton.glb")))[:, :NUM_JOINTS] @ Z_UP_TO_Y_UP
    assert np.abs(world - motion.joints.numpy()).max() < TOLERANCE, clip


def test_glb_hierarchy_accessors_and_bounds(cartwheel):
    path, joints = cartwheel
    gltf = GLTF2().load(str(path))
    assert gltf.asset.version == "2.0" and gltf.scene == 0
    names = [node.name for node in gltf.nodes]
    assert names[:NUM_JOINTS] == list(JOINT_NAMES) and names[NUM_JOINTS:] == ["body"]
    parent_of = {child: i for i, node in enumerate(gltf.nodes) for child in node.children or []}
    assert [parent_of.get(j, -1) for j in range(NUM_JOINTS)] == list(PARENTS)
    assert sorted(gltf.scenes[0].nodes) == [0, NUM_JOINTS]  # the skeleton root and the skinned mesh

    # Animation: one key per frame at 20 fps, a rotation per joint and the root's translation.
    animation = gltf.animations[0]
    times = _accessor(gltf, animation.samplers[0].input)
    assert len(times) == len(joints) and np.allclose(np.diff(times), 1 / FPS)
    time_accessor = gltf.accessors[animation.samplers[0].input]
    assert time_accessor.min == [0.0] and abs(time_accessor.max[0] - (len(joints) - 1) / FPS) < 1e-6
    targets = sorted((c.target.node, c.target.path) for c in animation.channels)
    assert targets == sorted([(j, "rotation") for j in range(NUM_JOINTS)] + [(0, "translation")])
    for channel in animation.channels:
        sampler = animation.samplers[channel.sampler]
        assert sampler.interpolation == "LINEAR" and gltf.accessors[sampler.output].count == len(times)
        values = _accessor(gltf, sampler.output)
        if channel.target.path == "rotation":
            assert np.allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-6)
            assert ((values[1:] * values[:-1]).sum(1) >= 0).all()  # no sign flips between keys
        else:
            accessor = gltf.accessors[sampler.output]
            assert np.allclose(accessor.min, values.min(0)) and np.allclose(accessor.max, values.max(0))
            assert np.allclose(values, joints[:, 0] @ Z_UP_TO_Y_UP.T, atol=1e-6)  # the pelvis, Y up

    # Every accessor stays inside its buffer view, every view inside the one buffer, 4-byte aligned.
    blob = gltf.binary_blob()
    assert gltf.buffers[0].byteLength == len(blob)
    for accessor in gltf.accessors:
        view = gltf.bufferViews[accessor.bufferView]
        size = np.dtype(_NUMPY_TYPE[accessor.componentType]).itemsize * _WIDTH[accessor.type]
        assert accessor.count * size <= view.byteLength and view.byteOffset % 4 == 0
        assert view.byteOffset + view.byteLength <= len(blob)

    # Skin and body mesh: the rest-pose mesh lies inside its POSITION bounds, is bound to the skin's
    # 22 joints, and the inverse bind matrices undo the rest pose (identity rotations).
    skin = gltf.skins[0]
    assert skin.joints == list(range(NUM_JOINTS)) and skin.skeleton == 0
    primitive = gltf.meshes[0].primitives[0]
    positions = _accessor(gltf, primitive.attributes.POSITION)
    bounds = gltf.accessors[primitive.attributes.POSITION]
    assert np.allclose(bounds.min, positions.min(0)) and np.allclose(bounds.max, positions.max(0))
    # The mesh is the procedural body of the skeleton's rest pose, vertex for vertex (Y up as the
    # SMPL body frame is).
    assert np.allclose(positions, build_procedural_smpl(rest_joints24())["v_template"], atol=1e-6)
    assert _accessor(gltf, primitive.attributes.JOINTS_0).max() < NUM_JOINTS
    assert np.allclose(_accessor(gltf, primitive.attributes.WEIGHTS_0).sum(1), 1.0)
    faces = _accessor(gltf, primitive.indices)
    assert len(faces) % 3 == 0 and faces.max() < len(positions)
    # A second reader (trimesh) finds the same single body mesh.
    scene = trimesh.load(str(path))
    (mesh,) = scene.geometry.values()
    assert len(mesh.vertices) == len(positions) and len(mesh.faces) * 3 == len(faces)
    ibm = _accessor(gltf, skin.inverseBindMatrices).reshape(NUM_JOINTS, 4, 4).transpose(0, 2, 1)
    rest = _node_world_positions_rest(gltf)
    assert np.allclose(ibm[:, :3, :3], np.eye(3)) and np.allclose(ibm[:, :3, 3], -rest, atol=1e-6)


def _node_world_positions_rest(gltf: GLTF2) -> np.ndarray:
    """(22, 3) joint positions of the nodes' rest transforms (rotations identity)."""
    rest = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        rest[j] = rest[PARENTS[j]] + np.asarray(gltf.nodes[j].translation)
    return rest


def test_cli_exports_glb(tmp_path, capsys):
    from vimogen_core.cli import main

    feats = tmp_path / "jump.npy"
    np.save(feats, load_builtin_clip("jump").motion.features().numpy())
    assert main(["motion", "export", str(feats), "--to", "glb", "--out", str(tmp_path / "jump.glb")]) == 0
    data = (tmp_path / "jump.glb").read_bytes()
    assert data[:4] == b"glTF" and int.from_bytes(data[8:12], "little") == len(data)
    assert GLTF2().load(str(tmp_path / "jump.glb")).meshes == []  # no body unless asked for


BLENDER_SCRIPT = Path(__file__).with_name("blender_glb_joints.py")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("blender") is None, reason="needs Debian blender (make system-deps)")
def test_blender_imports_the_glb_with_the_same_joints(cartwheel, tmp_path):
    path, joints = cartwheel
    out = tmp_path / "blender_joints.json"
    subprocess.run(["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(BLENDER_SCRIPT), "--", str(path), str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["frames"] == len(joints) and result["meshes"] == 1
    bones = np.asarray([[frame[name] for name in JOINT_NAMES] for frame in result["heads"]])  # (T, 22, 3)
    # Blender's importer turns glTF's Y up into its own Z up, the project's convention.
    assert np.abs(bones - joints).max() < TOLERANCE
