"""Curation on the real built-in clips: windows, mirrors, splits, gates, quarantine, video sources."""
from __future__ import annotations

import json
import zipfile
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vimogen_core.curation.captions import mirror_caption
from vimogen_core.curation.dataset import ShardDataset
from vimogen_core.curation.gates import LocomotionJudge
from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.pipeline import curate_samples
from vimogen_core.curation.source_index import SourceIndex
from vimogen_core.curation.take import curate_take, window_starts
from vimogen_core.sources.raw_takes import SourcesConfig, build_sources
from vimogen_core.curation.records import CuratedSample, RawSample, Rejection, assign_split
from vimogen_core.motion.motion import Motion, canonicalize, mirror, resample
from vimogen_core.sources.deepmimic import load_builtin_clip
from vimogen_core.sources.hmr import load_hmr_output
from vimogen_core.sources.simulated_capture import CAPTURE_PRESETS, capture_rng, simulate_capture
from vimogen_core.sources.synthetic_video import SyntheticCapture, SyntheticVideoSource


def take(name: str, min_frames: int = 121, **changes) -> RawSample:
    clip = load_builtin_clip(name, min_frames=min_frames)
    raw = RawSample(id=f"deepmimic/{name}", source="optical_mocap", subset="deepmimic", origin=clip.meta["file"],
                    motion=clip.motion, motion_captions=tuple(clip.captions), video_caption=clip.video_caption)
    return replace(raw, **changes)


def accepted(results) -> list[CuratedSample]:
    return [r for r in results if isinstance(r, CuratedSample)]


def test_caption_mirroring():
    assert mirror_caption("Kicks with the Right leg, turns counter-clockwise, then LEFT.") == \
        "Kicks with the Left leg, turns clockwise, then RIGHT."
    assert mirror_caption("a bright, upright rightward-leaning step") == "a bright, upright leftward-leaning step"


def test_long_takes_are_windowed_and_each_window_canonicalised():
    raw = take("walk", min_frames=401)
    raw = replace(raw, motion=raw.motion.slice(0, 401))  # 401 frames = 400 feature frames
    assert window_starts(401, 201, 100) == [0, 100, 200]
    assert window_starts(450, 201, 100) == [0, 100, 200, 249]
    results = curate_take(raw, CurationConfig(mirror=False))
    samples = accepted(results)
    assert [s.id for s in samples] == ["deepmimic/walk@0", "deepmimic/walk@100", "deepmimic/walk@200"]
    assert all(s.features.shape == (200, 276) for s in samples)
    for sample in samples:
        joints = sample.features[:, 126:192].reshape(-1, 22, 3)
        np.testing.assert_allclose(joints[0, 0, :2], 0.0, atol=1e-5)  # pelvis over the origin
        across = joints[0, 2] - joints[0, 1]  # left hip -> right hip along +x: facing +y
        assert across[0] > 0 and abs(across[1]) < 1e-5
    assert len({s.split for s in samples}) == 1  # windows of one take never straddle splits


def test_mirror_swaps_body_sides_and_caption_words():
    samples = {s.id: s for s in accepted(curate_take(take("kick")))}
    original, mirrored = samples["deepmimic/kick"], samples["deepmimic/kick~mirror"]
    assert mirrored.mirrored and not original.mirrored
    assert any("right leg" in c for c in original.motion_captions)
    assert mirrored.motion_captions == tuple(mirror_caption(c) for c in original.motion_captions)
    assert any("left leg" in c for c in mirrored.motion_captions)
    expected = mirror(canonicalize(load_builtin_clip("kick", min_frames=121).motion)).features().numpy()
    np.testing.assert_allclose(mirrored.features, expected, atol=1e-6)
    # The kicking foot switches sides: the right foot moves most in the original, the left in the mirror.
    def foot_travel(features, foot):
        return np.abs(np.diff(features[:, 126:192].reshape(-1, 22, 3)[:, foot], axis=0)).sum()
    assert foot_travel(original.features, 11) > foot_travel(original.features, 10)
    assert foot_travel(mirrored.features, 10) > foot_travel(mirrored.features, 11)


def test_split_is_deterministic_by_group_and_follows_the_fractions():
    ids = [f"take/{i}" for i in range(20000)]
    counts = Counter(assign_split(i, (0.8, 0.1, 0.1)) for i in ids)
    assert abs(counts["train"] / 20000 - 0.8) < 0.015 and abs(counts["val"] / 20000 - 0.1) < 0.01
    assert [assign_split(i) for i in ids[:50]] == [assign_split(i) for i in ids[:50]]
    assert Counter(assign_split(i, (0.8, 0.1, 0.1), salt="x") for i in ids[:2000]) != Counter(assign_split(i, (0.8, 0.1, 0.1)) for i in ids[:2000])


def _gates_of(results) -> set[str]:
    return {gate for r in results if isinstance(r, Rejection) for gate in r.gates}


def test_generic_gates_reject_with_reasons():
    walk = take("walk")
    joints = walk.motion.joints.clone()
    joints[10, 5] = float("nan")
    nan_take = replace(walk, motion=replace(walk.motion, joints=joints))
    [rejection] = curate_take(nan_take)
    assert rejection.gates == ("non_finite",) and "non-finite" in rejection.reasons[0]

    short = replace(walk, motion=walk.motion.slice(0, 30))
    assert _gates_of(curate_take(short)) == {"length"}
    assert "29 frames outside [40, 200]" in curate_take(short)[0].reasons[0]

    assert _gates_of(curate_take(replace(walk, motion_captions=("  ",), video_caption=""))) == {"caption"}

    teleport = walk.motion.joints.clone()
    teleport[60:, 20] += torch.tensor([0.0, 0.0, 2.0], dtype=teleport.dtype)  # a wrist jumps 2 m (and stays)
    results = curate_take(replace(walk, motion=Motion(walk.motion.local_rotmats, teleport, walk.motion.fps, None)))
    assert {"joint_speed", "bone_length"} <= _gates_of(results)
    assert any("joint speed" in reason for r in results for reason in r.reasons)

    centimetres = Motion(walk.motion.local_rotmats, walk.motion.joints * 100.0, walk.motion.fps, None)  # wrong units
    results = curate_take(replace(walk, motion=centimetres))
    assert any("femur length" in reason for r in results for reason in r.reasons)


def test_caption_match_judge_is_pluggable():
    still = take("getup_facedown", motion_captions=("a person runs forward across the room",))
    results = curate_take(still, CurationConfig(mirror=False), judge=LocomotionJudge())
    assert results[0].gates == ("caption_match",)
    assert results[0].reasons[0].startswith("locomotion-heuristic: caption describes locomotion")
    assert accepted(curate_take(take("walk"), judge=LocomotionJudge()))  # a true caption passes


def test_simulated_captures_go_through_hmr_ingestion_and_the_jitter_gate():
    clip = load_builtin_clip("walk", min_frames=121)
    jitters = {}
    for preset in ("clean", "gross_failure"):
        capture = simulate_capture(clip.motion, CAPTURE_PRESETS[preset], capture_rng(0, "walk", preset))
        assert capture["fps"] == 30.0 and capture["transl"][:, 2].min() > 2.5  # camera coordinates: always in front
        motion, extrinsic, intrinsic = load_hmr_output(capture)
        assert motion.fps == 20 and extrinsic.shape == (motion.n_frames, 9) and intrinsic[0, 0] == 1000.0
        raw = RawSample(id=f"cap/{preset}", source="in_the_wild_video", subset="simulated_capture", origin=preset, motion=motion,
                        motion_captions=tuple(clip.captions), camera_extrinsic=extrinsic, camera_intrinsic=intrinsic)
        results = curate_take(raw, CurationConfig(mirror=False))
        jitters[preset] = results[0].stats["jitter"]
        if preset == "clean":
            assert isinstance(results[0], CuratedSample), results[0]
            assert results[0].camera_extrinsic is not None  # a whole, unmirrored take keeps its camera
        else:
            assert isinstance(results[0], Rejection) and "jitter" in results[0].gates
    assert jitters["clean"] < 0.04 <= jitters["gross_failure"]


def test_builtin_sources_end_to_end_with_quarantine(tmp_path):
    clips = ("walk", "punch", "backflip", "crawl")
    sources = build_sources(tmp_path / "sources", SourcesConfig(clips=clips))
    assert sources.by_source == {"in_the_wild_video": 12, "optical_mocap": 4}
    assert "no backend configured" in sources.synthetic_video_status
    # A damaged take file: quarantined with the file named, the rest continues.
    damaged = tmp_path / "sources" / "in_the_wild_video" / "punch__noisy.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    result = curate_samples(SourceIndex(str(tmp_path / "sources")), tmp_path / "curated", judge=LocomotionJudge())
    assert result.by_source["optical_mocap"] == 8  # 4 clips x (original + mirror)
    quarantine = pq.read_table(result.quarantine_path).to_pandas()
    broken = quarantine[quarantine["id"] == "simulated_capture/punch/noisy"].iloc[0]
    assert list(broken["gates"]) == ["load"] and "punch__noisy.npz" in broken["reasons"][0]
    gross = quarantine[quarantine["id"].str.contains("gross_failure")]
    assert len(gross) == 2 * len(clips) and all("jitter" in gates for gates in gross["gates"])
    passed = set(ShardDataset(result.manifest_path, split=None).ids)
    assert {"simulated_capture/walk/clean", "simulated_capture/crawl/clean"} <= passed
    assert result.n_accepted + result.n_rejected == 8 + 2 * 12 - 1  # the damaged take is one rejection
    assert json.loads((tmp_path / "curated" / "summary.json").read_text())["n_accepted"] == result.n_accepted


def test_inbox_takes_join_their_source_and_bad_ones_are_quarantined(tmp_path):
    from vimogen_core.motion.export import write_amass_npz

    inbox = tmp_path / "inbox"
    walk = load_builtin_clip("walk", min_frames=121).motion
    good = write_amass_npz(inbox / "optical_mocap" / "lab" / "walk_60fps.npz", resample(walk, 60.0))
    good.with_suffix(".txt").write_text("a person walks forward\n\nsomeone takes a few steps\n")
    write_amass_npz(inbox / "optical_mocap" / "lab" / "uncaptioned.npz", walk)
    (inbox / "optical_mocap" / "lab" / "truncated.npz").write_bytes(good.read_bytes()[:200])
    (inbox / "stray.npz").write_bytes(good.read_bytes())
    sources = build_sources(tmp_path / "sources", SourcesConfig(clips=("punch",)), sources=("optical_mocap",), inbox=inbox)
    assert sources.by_source == {"optical_mocap": 4} and sources.by_subset == {"deepmimic": 1, "inbox": 3}
    assert "not under a source folder" in sources.inbox_ignored[str(inbox / "stray.npz")]
    assert not (tmp_path / "sources" / "in_the_wild_video").exists(), "only the requested source is built"

    result = curate_samples(SourceIndex(str(tmp_path / "sources")), tmp_path / "curated")
    ids = set(ShardDataset(result.manifest_path, split=None).ids)
    assert {"inbox/optical_mocap/lab/walk_60fps", "inbox/optical_mocap/lab/walk_60fps~mirror"} <= {i.split("@")[0] for i in ids}
    quarantine = {row["id"]: row for row in pq.read_table(result.quarantine_path).to_pylist()}
    assert any(k.startswith("inbox/optical_mocap/lab/uncaptioned") and "caption" in row["gates"] for k, row in quarantine.items())
    truncated = quarantine["inbox/optical_mocap/lab/truncated"]
    assert truncated["gates"] == ["load"] and "truncated.npz" in truncated["reasons"][0]


def test_synthetic_video_without_backends_yields_nothing_and_says_why():
    source = SyntheticVideoSource.from_environment({})
    assert list(source.generate(["a person waves"])) == []
    reason = source.unavailable_reason
    assert "prompt expansion" in reason and "video generation" in reason and "mesh recovery" in reason
    assert "VIMOGEN_VIDEO_GENERATOR" in reason
    with pytest.raises(ValueError, match="package.module:factory"):
        SyntheticVideoSource.from_environment({"VIMOGEN_VIDEO_GENERATOR": "no_colon_here"})


class TemplateExpander:
    """Prompt expansion by a fixed video-style template."""

    name = "template"

    def expand(self, prompt: str) -> str:
        return f"Full-body shot, static camera. {prompt[0].upper()}{prompt[1:]}."


class ClipRetrievalGenerator:
    """'Generates' the video of the built-in clip whose name appears in the description."""

    name = "clip-retrieval"

    def generate(self, description: str):
        name = next(n for n in ("cartwheel", "walk", "jump") if n in description.lower())
        return load_builtin_clip(name, min_frames=121).motion


class SimulatedRecovery:
    name = "simulated-capture"

    def recover(self, video):
        return simulate_capture(video, CAPTURE_PRESETS["clean"], capture_rng("synthetic", video.n_frames))


def test_synthetic_video_chain_runs_through_the_same_ingestion(tmp_path):
    source = SyntheticVideoSource(TemplateExpander(), ClipRetrievalGenerator(), SimulatedRecovery())
    assert source.unavailable_reason is None
    captures = list(source.generate(["a person does a cartwheel", "a person takes a walk"]))
    assert [c.description.startswith("Full-body shot") for c in captures] == [True, True]
    assert captures[0].backends == "template -> clip-retrieval -> simulated-capture"
    takes = []
    for number, capture in enumerate(captures):
        motion, _, _ = load_hmr_output(capture.hmr_output)
        takes.append(RawSample(id=f"synthetic/{number}", source="synthetic_video", subset="generated", origin=capture.prompt,
                               motion=motion, motion_captions=(capture.prompt,), video_caption=capture.description))
    result = curate_samples(takes, tmp_path / "curated")
    assert result.n_accepted + result.n_rejected == 4
    assert result.by_source.get("synthetic_video", 0) + result.rejected_by_source.get("synthetic_video", 0) == 4


def test_released_vimogen228k_layout_ingests_with_all_fields_kept(tmp_path):
    from vimogen_core.curation.sharding import write_shards
    from vimogen_core.curation.vimogen228k import ingest_vimogen228k

    walk = canonicalize(load_builtin_clip("walk", min_frames=121).motion).features()  # (120, 276) float32
    kick = canonicalize(load_builtin_clip("kick", min_frames=121).motion).features()
    root = tmp_path / "release"
    (root / "motions").mkdir(parents=True)
    torch.save(walk.clone(), root / "motions" / "mocap_0001.pt")
    extrinsic = torch.randn(kick.shape[0] + 1, 9)
    intrinsic = torch.tensor([[1000.0, 0, 960], [0, 1000.0, 540], [0, 0, 1]])
    torch.save({"motion": kick.clone(), "extrinsic": extrinsic, "intrinsic": intrinsic}, root / "motions" / "video_0001.pt")
    torch.save({"motion": kick[:20].clone()}, root / "motions" / "short.pt")
    (root / "motions" / "evil.pt").write_bytes(b"\x80\x04\x95not a tensor archive")
    entries = [
        {"id": "mocap_0001", "subset": "HumanML3D", "split": "train", "motion_text_annot": ["a person walks forward."],
         "video_text_annot": "A person walks across a room.", "motion_path": "motions/mocap_0001.pt", "extra_note": "kept"},
        {"id": "video_0001", "subset": "in_the_wild_video", "split": "test", "motion_text_annot": "someone kicks with the right leg.",
         "video_text_annot": ["A fighter kicks."], "motion_path": "motions/video_0001.pt", "video_path": "videos/video_0001.mp4",
         "ref_motion_path": "refs/video_0001.pt"},
        {"id": "short_0001", "subset": "HumanML3D", "split": "val", "motion_text_annot": "too short", "video_text_annot": "",
         "motion_path": "motions/short.pt"},
        {"id": "evil_0001", "subset": "HumanML3D", "split": "train", "motion_text_annot": "x", "video_text_annot": "x",
         "motion_path": "motions/evil.pt"},
    ]
    annotations = root / "annotations.json"
    annotations.write_text(json.dumps(entries))

    curated = ingest_vimogen228k(annotations, root, tmp_path / "curated")
    assert (curated.n_accepted, curated.n_rejected) == (2, 2)
    quarantine = pq.read_table(curated.quarantine_path).to_pandas().set_index("id")
    assert list(quarantine.loc["short_0001", "gates"]) == ["length"]
    assert any("evil.pt" in reason for reasons in quarantine["reasons"] for reason in reasons)

    shards = write_shards(curated.manifest_path, tmp_path / "shards")
    manifest = pq.read_table(shards.manifest_path).to_pandas().set_index("id")
    assert manifest.loc["mocap_0001", ["subset", "split", "source"]].tolist() == ["HumanML3D", "train", "optical_mocap"]
    assert manifest.loc["video_0001", ["subset", "split", "source"]].tolist() == ["in_the_wild_video", "test", "in_the_wild_video"]
    assert list(manifest.loc["mocap_0001", "motion_text"]) == ["a person walks forward."]
    assert manifest.loc["video_0001", "video_text"] == "A fighter kicks."
    assert json.loads(manifest.loc["mocap_0001", "annotation_json"]) == entries[0]  # verbatim, unknown field included
    assert json.loads(manifest.loc["video_0001", "annotation_json"]) == entries[1]
    np.testing.assert_array_equal(np.asarray(manifest.loc["video_0001", "camera_extrinsic"]).reshape(-1, 9), extrinsic.numpy())
    np.testing.assert_array_equal(np.asarray(manifest.loc["video_0001", "camera_intrinsic"]).reshape(3, 3), intrinsic.numpy())
    by_id = {item["id"]: item for item in (ShardDataset(shards.manifest_path, split=None)[i] for i in range(2))}
    np.testing.assert_array_equal(by_id["mocap_0001"]["features"].numpy(), walk.numpy())  # bit-exact
    np.testing.assert_array_equal(by_id["video_0001"]["features"].numpy(), kick.numpy())
