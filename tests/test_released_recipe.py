"""The released recipe (../shared/reference/RELEASED_RECIPE.md), rule by rule, pinned to its numbers:
the sampler schedule and smoothing, the training weight and loss mask, the training preset, the
ViMoGen-228K entry variants and subset rules, and the released MBench protocol's inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vimogen_core.bench.prompts import load_published_prompts
from vimogen_core.bench.protocol import build_requests, get_protocol, resample_fps
from vimogen_core.model.flow import FlowMatching, euler_sample, get_sampler, shift_time, smooth_features
from vimogen_core.motion.representation import POSE6D, Normalizer, features_to_joints_integrated
from vimogen_core.sources.vimogen228k import load_vimogen_motion, read_record
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.batches import collate
from vimogen_core.train.data import MotionItem, Vimogen228kDataset, draw_sample
from vimogen_core.train.loop import ema_decay

from conftest import shared_dir

SHARED = shared_dir()  # read in place; missing reference files fail the tests that need them
MBENCH = SHARED / "mbench" / "MBench_final.json"


# --- sampler ----------------------------------------------------------------------------------


def test_released_sampler_sigmas_and_final_step_to_zero():
    times = get_sampler("released").times()
    assert times.shape == (51,)
    np.testing.assert_allclose(times[:3].numpy(), [0.921053, 0.916132, 0.911063], atol=1e-6)
    np.testing.assert_allclose(times[47:50].numpy(), [0.179795, 0.125899, 0.066288], atol=1e-6)
    assert float(times[-1]) == 0.0
    # Euler from pure noise at the first sigma: the network sees exactly the 50 sigmas (x 1000), and
    # with a constant velocity v the result is noise + v (0 - 0.921053).
    seen = []
    noise, v = torch.randn(2, 7, 276), torch.randn(2, 7, 276)

    def velocity(x, s):
        seen.append(float(s[0]))
        return v

    sampler = get_sampler("released")
    out = euler_sample(velocity, noise, sampler.steps, shift=sampler.shift, strength=sampler.strength)
    np.testing.assert_allclose(seen, times[:50].numpy(), atol=1e-7)
    torch.testing.assert_close(out, noise - float(times[0]) * v)
    # The project's sampler keeps its start at s = 1.
    assert float(get_sampler("project").times()[0]) == 1.0


def test_released_smoothing_keeps_the_edge_frames():
    x = torch.tensor(np.random.default_rng(0).normal(size=(11, 3)), dtype=torch.float32)  # (T, D)
    sampler = get_sampler("released")
    out = smooth_features(x, padding=sampler.smoothing_padding, keep_edge_frames=sampler.keep_edge_frames)
    assert torch.equal(out[:2], x[:2]) and torch.equal(out[-2:], x[-2:])
    weights = np.exp(-np.arange(-2, 3) ** 2 / 2.0)
    weights /= weights.sum()
    for t in range(2, 9):
        np.testing.assert_allclose(out[t].numpy(), weights @ x[t - 2:t + 3].numpy(), atol=1e-6)
    # Zero padding reaches only the frames it puts back: on a constant sequence the inner frames stay.
    flat = smooth_features(torch.ones(8, 2), padding="zeros", keep_edge_frames=2)
    torch.testing.assert_close(flat, torch.ones(8, 2))
    assert float(smooth_features(torch.ones(8, 2), padding="zeros")[0, 0]) < 1  # without keeping edges


# --- training objective -------------------------------------------------------------------------


def test_training_grid_and_weight_at_timesteps_50_500_999():
    flow = FlowMatching()
    released_grid = shift_time(torch.linspace(1, 0, 1001, dtype=torch.float64)[:-1], 5.0)
    torch.testing.assert_close(flow.grid.double().sort().values, released_grid.sort().values, atol=1e-6, rtol=0)
    timesteps = flow.timestep_for_model(flow.grid)
    for t, expected in ((50, 0.3068), (500, 2.0764), (999, 0.0064)):
        nearest = int((timesteps - t).abs().argmin())  # the weight is defined on the grid's timesteps
        assert abs(float(flow.grid_weight[nearest]) - expected) < 1e-4, t
    assert abs(float(flow.grid_weight.mean()) - 1.0) < 1e-5 and abs(float(flow.grid_weight.max()) - 2.0764) < 1e-4


def test_loss_of_a_video_recovered_text_mode_sample_supervises_the_local_pose_only():
    rng = np.random.default_rng(1)
    pred, x0, noise = (torch.tensor(rng.normal(size=(2, 3, 276)), dtype=torch.float32) for _ in range(3))
    frame_mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    dim_mask = torch.ones(2, 276, dtype=torch.bool)
    dim_mask[1, 126:] = False  # sample 1: mogen_db/vigen in text mode
    flow = FlowMatching()
    s = flow.grid[torch.tensor([100, 700])]
    loss = flow.loss(pred, x0, noise, s, frame_mask, dim_mask)

    w = flow.time_weight(s).numpy()
    channel = np.ones(276)
    channel[258:] = 3.0
    err = (pred.numpy() - (noise.numpy() - x0.numpy())) ** 2 * channel
    total = w[0] * err[0].sum() + w[1] * err[1, :2, :126].sum()
    count = 3 * 276 + 2 * 126
    assert abs(float(loss) - total / count) < 1e-5 * abs(total / count)
    # The global channels of the masked sample (and its padded frame) contribute nothing.
    moved = pred.clone()
    moved[1, :, 126:] += 100.0
    moved[1, 2] += 100.0
    assert float(flow.loss(moved, x0, noise, s, frame_mask, dim_mask)) == float(loss)
    # Without a mask the released formula is the project's: the mean over valid frames x all dims.
    full = flow.loss(pred, x0, noise, s, frame_mask, torch.ones(2, 276, dtype=torch.bool))
    assert abs(float(full) - float(flow.loss(pred, x0, noise, s, frame_mask))) < 1e-6


class _Items:
    """A data source of fixed items (normalised features), for the per-sample rules."""

    def __init__(self, items):
        self.items = items
        self.normalizer = Normalizer(np.zeros(276, np.float32), np.ones(276, np.float32))

    def __len__(self):
        return len(self.items)

    def sample(self, index, rng):
        return self.items[index]


def _item(path: str, n: int = 60, **kwargs) -> MotionItem:
    features = np.random.default_rng(len(path) + n).normal(size=(n, 276)).astype(np.float32)
    return MotionItem(features, ["a person walks"], "", video_captions=["A person in grey walks in a park."],
                      path=path, **kwargs)


def test_subset_rules_read_from_the_motion_path():
    config = get_train_preset("released")
    items = _Items([_item("motion31/a.pt"), _item("mogen_db/b.pt"), _item("vigen/c.pt"), _item("mocap/d.pt")])

    def draws(index):
        one = _Items([items.items[index]])
        return [draw_sample(one, config, i) for i in range(800)]

    p_text = {k: np.mean([d.use_text for d in draws(k)]) for k in range(4)}
    assert abs(p_text[0] - 0.4) < 0.05 and abs(p_text[1] - 0.4) < 0.05
    assert abs(p_text[2] - 0.8) < 0.05 and abs(p_text[3] - 0.8) < 0.05
    for k, masked in ((0, False), (1, True), (2, True), (3, False)):
        for d in draws(k)[:100]:
            assert d.local_loss == (masked and d.use_text)
            assert d.caption in ("", "A person in grey walks in a park.")  # video_text_annot trains
    batch = collate(draws(1)[:8])
    rows = [d.local_loss for d in draws(1)[:8]]
    assert any(rows) and batch.loss_dims is not None
    for row, masked in enumerate(rows):
        assert bool(batch.loss_dims[row, POSE6D].all()) and bool(batch.loss_dims[row, 126:].any()) != masked
    # The project's tiny preset keeps its own rules: motion captions, no loss mask.
    tiny = get_train_preset("tiny")
    assert all(not draw_sample(_Items([items.items[1]]), tiny, i).local_loss for i in range(50))


def test_released_reference_corruption_ranges():
    from vimogen_core.train.data import corrupt_reference

    ramp = np.tile(np.arange(100, dtype=np.float32)[:, None], (1, 276))  # frame t holds t everywhere
    released = get_train_preset("released")
    offsets, stds = [], []
    for seed in range(200):
        blended = corrupt_reference(ramp, np.random.default_rng(seed), released.replace(ref_noise_max_fraction=0.0))
        changed = np.abs(blended[:, 0] - ramp[:, 0]) > 1e-6
        offsets += list(blended[changed, 0] - ramp[changed, 0])  # w (t-1) + (1-w)(t+1) - t = 1 - 2w
        noisy = corrupt_reference(ramp, np.random.default_rng(seed), released.replace(ref_blend_fraction=(0.0, 0.0)))
        diff = noisy - ramp[:, np.r_[0:126, 258:270]]
        rows = np.abs(diff).max(1) > 1e-6
        if rows.sum() > 20:  # enough noisy frames for a close estimate of their std
            stds.append(diff[rows & (np.arange(100) > 1) & (np.arange(100) < 98)].std())
    assert max(np.abs(offsets)) <= 0.3 + 1e-5 and max(np.abs(offsets)) > 0.25  # weights 0.35-0.65
    assert 0.045 < min(stds) < 0.065 and 0.135 < max(stds) < 0.16  # noise std ~U[0.05, 0.15]


def test_released_training_preset_numbers():
    config = get_train_preset("released")
    assert (config.lr, config.adam_betas, config.weight_decay, config.grad_clip) == (2e-4, (0.9, 0.95), 1e-4, 0.1)
    assert (config.warmup_steps, config.ema_decay, ema_decay(config, 0), ema_decay(config, 39_999)) == (100, 0.9999, 0.9999, 0.9999)
    assert (config.steps, config.batch_size, config.text_len, config.text_drop) == (40_000, 1024, 226, 0.5)
    assert (config.p_text, config.p_text_noisy, config.noisy_path_markers) == (0.8, 0.4, ("motion31", "mogen_db"))
    assert config.local_loss_path_markers == ("mogen_db", "vigen") and config.caption_field == "video"
    assert (config.length_rule, config.min_frames, config.max_frames, config.ref_dropout) == ("redraw", 40, 200, 0.0)
    assert (config.sampler, config.guidance_scale, config.geometry_weight, config.time_shift) == ("released", 5.0, 0.0, 5.0)
    tiny = get_train_preset("tiny")  # the project's own choices stay
    assert (tiny.sampler, tiny.guidance_scale, tiny.caption_field, tiny.length_rule) == ("project", 2.5, "motion", "crop")
    assert (tiny.adam_betas, tiny.grad_clip, tiny.ema_ramp) == ((0.9, 0.999), 1.0, True)


# --- ViMoGen-228K entry variants ---------------------------------------------------------------------


def _motion(n: int, width: int = 276, seed: int = 0) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).normal(size=(n, width)), dtype=torch.float32)


@pytest.fixture
def release(tmp_path):
    """A released-layout folder: list motion_path, .npy, a (80, 426) motion, a ref_motion_path dict,
    and one motion too short to train."""
    for k in range(3):
        torch.save(_motion(50 + k, seed=k), tmp_path / f"alt{k}.pt")
    np.save(tmp_path / "mocap.npy", _motion(70, seed=5).numpy())
    torch.save(_motion(80, 426, seed=6), tmp_path / "dummy_motion.pt")
    torch.save({"motion": _motion(90, seed=7), "extrinsic": torch.zeros(90, 9), "intrinsic": torch.eye(3)},
               tmp_path / "vigen_clip.pt")
    torch.save({"motion": _motion(90, 426, seed=8)}, tmp_path / "vigen_ref.pt")
    torch.save(_motion(30, seed=9), tmp_path / "short.pt")
    entries = [
        {"id": "list", "motion_path": [f"alt{k}.pt" for k in range(3)], "motion_text_annot": ["walks"],
         "video_text_annot": "A man walks."},
        {"id": "npy", "motion_path": "mocap.npy", "video_text_annot": "A woman jogs."},
        {"id": "wide", "motion_path": "dummy_motion.pt", "video_text_annot": "Someone waves."},
        {"id": "ref", "motion_path": "vigen_clip.pt", "ref_motion_path": "vigen_ref.pt", "video_text_annot": "A kick."},
        {"id": "short", "motion_path": "short.pt", "video_text_annot": "Too short."},
    ]
    (tmp_path / "ViMoGen-228K.json").write_text(json.dumps(entries))
    return tmp_path, entries


def test_list_motion_path_draws_each_path(release):
    root, entries = release
    rng = np.random.default_rng(0)
    drawn = [read_record(entries[0], 0, root / "ViMoGen-228K.json", root, rng=rng).motion_path for _ in range(60)]
    assert set(drawn) == {"alt0.pt", "alt1.pt", "alt2.pt"}
    assert min(drawn.count(p) for p in set(drawn)) > 10  # uniformly
    lengths = {read_record(entries[0], 0, root / "x.json", root, path_index=k).motion.shape[0] for k in range(3)}
    assert lengths == {50, 51, 52}


def test_npy_wide_and_reference_dict_motions(release):
    root, entries = release
    wide = load_vimogen_motion(root / "dummy_motion.pt")["motion"]
    assert wide.shape == (80, 276)
    np.testing.assert_array_equal(wide, _motion(80, 426, seed=6).numpy()[:, :276])
    assert load_vimogen_motion(root / "mocap.npy")["motion"].shape == (70, 276)
    record = read_record(entries[3], 3, root / "x.json", root)
    assert record.reference_motion.shape == (90, 276) and record.extrinsic.shape == (90, 9)
    np.testing.assert_array_equal(record.reference_motion, _motion(90, 426, seed=8).numpy()[:, :276])


def test_convert_reads_the_released_dummy_motion(release, tmp_path):
    from vimogen_core.cli import main

    root, _ = release
    out = tmp_path / "dummy.npy"
    assert main(["motion", "convert", str(root / "dummy_motion.pt"), "--from", "vimogen", "--out", str(out)]) == 0
    assert np.load(out).shape == (80, 276)


def test_annotation_json_trains_in_place_with_the_released_rules(release):
    root, _ = release
    config = apply_overrides(get_train_preset("released"), [f"data={root / 'ViMoGen-228K.json'}"])
    dataset = Vimogen228kDataset(config)
    draws = [draw_sample(dataset, config, i) for i in range(200)]
    lengths = {len(d.features) for d in draws}
    assert 30 not in lengths and lengths <= {50, 51, 52, 70, 80, 90}  # the 30-frame motion is redrawn, never cropped
    assert {50, 51, 52} <= lengths  # every path of the list entry trains
    assert {d.caption for d in draws} - {""} <= {"A man walks.", "A woman jogs.", "Someone waves.", "A kick."}
    # The vigen entry: text mode supervises the local pose only; reference mode reads its reference file.
    vigen = [d for d in draws if len(d.features) == 90]
    assert any(d.use_text and d.local_loss for d in vigen) and any(not d.use_text for d in vigen)
    ref = dataset.normalizer.normalize(_motion(90, 426, seed=8).numpy()[:, :276])[:, np.r_[0:126, 258:270]]
    target = dataset.normalizer.normalize(_motion(90, seed=7).numpy())[:, np.r_[0:126, 258:270]]
    for d in vigen:
        if not d.use_text:
            assert np.corrcoef(d.reference.ravel(), ref.ravel())[0, 1] > 0.9
            assert abs(np.corrcoef(d.reference.ravel(), target.ravel())[0, 1]) < 0.2


def test_curation_keeps_every_path_of_a_list_entry(release):
    from vimogen_core.curation.vimogen228k import ReleasedTakes

    root, _ = release
    samples = [load() for load in ReleasedTakes(str(root / "ViMoGen-228K.json")).take_loaders()]
    ids = [getattr(s, "id", None) for s in samples]
    assert ids[:3] == ["list~0", "list~1", "list~2"] and "wide" in ids
    assert [len(s.features) for s in samples[:3]] == [50, 51, 52]


def test_curated_shards_of_the_release_keep_the_subset_rules(tmp_path):
    """Through ingestion and shards, the rules still read each sample's motion path."""
    from vimogen_core.curation.sharding import write_shards
    from vimogen_core.curation.vimogen228k import ingest_vimogen228k
    from vimogen_core.motion.motion import canonicalize
    from vimogen_core.sources.deepmimic import load_builtin_clip
    from vimogen_core.train.data import ShardMotionDataset

    walk = canonicalize(load_builtin_clip("walk", min_frames=121).motion).features()  # (120, 276)
    for subset in ("mogen_db", "humanml"):
        (tmp_path / subset).mkdir()
        torch.save(walk.clone(), tmp_path / subset / "walk.pt")
    entries = [{"id": subset, "subset": subset, "split": "train", "motion_text_annot": "a person walks forward.",
                "video_text_annot": "A person walks across a room.", "motion_path": f"{subset}/walk.pt"}
               for subset in ("mogen_db", "humanml")]
    (tmp_path / "ViMoGen-228K.json").write_text(json.dumps(entries))
    curated = ingest_vimogen228k(tmp_path / "ViMoGen-228K.json", tmp_path, tmp_path / "curated")
    assert curated.n_accepted == 2
    shards = write_shards(curated.manifest_path, tmp_path / "shards")
    config = apply_overrides(get_train_preset("released"), [f"data={shards.manifest_path}"])
    dataset = ShardMotionDataset(config)
    paths = [dataset.sample(i, np.random.default_rng(0)).path for i in range(2)]
    assert sorted("mogen_db" in p for p in paths) == [False, True]
    masked = [draw_sample(dataset, config, i) for i in range(60)]
    assert any(d.local_loss for d in masked) and all(d.use_text for d in masked if d.local_loss)


# --- MBench protocol ----------------------------------------------------------------------------


def test_resample_16_to_20_fps_is_linear_with_end_frames_kept():
    motion = np.stack([np.arange(16, dtype=np.float32)] * 2, axis=1)  # (16, 2)
    out = resample_fps(motion)
    assert out.shape == (20, 2)
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 15, 20), atol=1e-5)


def test_released_protocol_requests_162_reference_and_288_text_entries(tmp_path):
    prompts = load_published_prompts(MBENCH)
    entries = {e["global_id"]: e for e in json.loads(MBENCH.read_text())}
    released = get_protocol("released")
    requests, notes = build_requests(released, prompts, MBENCH, None)
    assert len(requests) == 450 and all(r.use_text and r.n_frames == 100 for r in requests)
    assert notes and notes[0].startswith("162 use_ref_motion entries ran in text mode")
    assert all(r.text == entries[r.prompt.global_id]["prompt_motion_detailed"] for r in requests)
    # With the MBench data folder the use_ref_motion entries run in reference mode on their motions.
    data = tmp_path / "mbench"
    (data / "wan2.2").mkdir(parents=True)
    for gid, entry in entries.items():
        if entry["use_ref_motion"]:
            torch.save({"motion": _motion(32 + gid % 5, seed=gid)}, data / "wan2.2" / f"{gid}.pt")
    requests, notes = build_requests(released, prompts, MBENCH, data)
    ref = [r for r in requests if not r.use_text]
    assert len(ref) == 162 and sum(r.use_text for r in requests) == 288 and not notes
    assert {r.prompt.global_id for r in ref} == {g for g, e in entries.items() if e["use_ref_motion"]}
    assert all(r.n_frames == 100 for r in requests if r.use_text)
    for r in ref:
        n = 32 + r.prompt.global_id % 5
        assert r.n_frames == n * 20 // 16 == len(r.reference)
    # The project's protocol: the short prompt at its duration, text mode throughout.
    project, _ = build_requests(get_protocol("project"), prompts, MBENCH, data)
    assert all(r.use_text and r.text == r.prompt.text and r.n_frames == r.prompt.n_frames for r in project)


class _RecordingDiT(torch.nn.Module):
    """Stands in for a released-size network: records the inputs of every call, predicts zero."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.calls = []

    def forward(self, x, timestep, context, x_mask, ref_motion, ref_motion_mask, use_text, context_mask=None):
        first_step = bool((timestep - 921.0526).abs().max() < 1e-2)
        self.calls.append({
            "timestep": timestep.clone(), "lengths": x_mask.sum(1).tolist(), "use_text": use_text.tolist(),
            "ref_lengths": ref_motion_mask.sum(1).tolist(), "ref_nonzero": ref_motion.abs().sum((1, 2)).gt(0).tolist(),
            "context": context.clone() if first_step else None,
        })
        return torch.zeros_like(x)


def _recording_generator(monkeypatch):
    """load_generator replaced by a Generator around a _RecordingDiT of the released size, with the
    released statistics and the offline text encoder; returns the model and load_generator's arguments."""
    from vimogen_core.model.config import get_preset
    from vimogen_core.train import generate
    from vimogen_core.train.conditioning import TextContext

    model = _RecordingDiT(get_preset("released"))
    loaded = {}

    def fake_load_generator(checkpoint, device="cpu", expected_preset=None, use_ema=True):
        loaded["use_ema"] = use_ema
        return generate.Generator(model=model, model_config=model.config, train_config=get_train_preset("released"),
                                  normalizer=Normalizer.from_released(SHARED / "reference"), text=TextContext("minilm", 226),
                                  device=torch.device("cpu"), checkpoint=Path(checkpoint), step=0)

    monkeypatch.setattr(generate, "load_generator", fake_load_generator)
    return model, loaded


def test_bench_run_cli_takes_the_protocol_and_the_mbench_data(tmp_path, monkeypatch):
    from vimogen_core.cli import main

    data = tmp_path / "mbench" / "wan2.2"
    data.mkdir(parents=True)
    for entry in json.loads(MBENCH.read_text()):
        if entry["use_ref_motion"] and entry["dimension"] == "Motion_Quality":
            torch.save(_motion(48, seed=entry["global_id"]), data / f"{entry['global_id']}.pt")
    model, loaded = _recording_generator(monkeypatch)
    assert main(["bench", "run", "--checkpoint", str(tmp_path / "released.pt"), "--prompts", str(MBENCH),
                 "--protocol", "released", "--mbench-data", str(tmp_path / "mbench"), "--dimension", "Jitter_Degree",
                 "--out", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert (meta["protocol"], meta["n_prompts"], meta["n_reference_mode"], meta["n_text_mode"]) == ("released", 150, 31, 119)
    assert loaded["use_ema"] is False and any(set(c["lengths"]) == {100} for c in model.calls)
    assert any(60 in c["lengths"] for c in model.calls)  # 48 frames at 16 fps -> 60 at 20 fps


def test_bench_run_released_feeds_the_model_what_the_recipe_states(tmp_path, monkeypatch):
    from vimogen_core.bench import runner
    from vimogen_core.train.conditioning import TextContext

    entries = {e["global_id"]: e for e in json.loads(MBENCH.read_text())}
    data = tmp_path / "mbench"
    (data / "wan2.2").mkdir(parents=True)
    (data / "wanvideo_text_features" / "prompt_motion_detailed").mkdir(parents=True)
    for gid, entry in entries.items():
        if entry["use_ref_motion"]:
            torch.save({"motion": _motion(40, seed=gid)}, data / "wan2.2" / f"{gid}.pt")
    marked = [gid for gid, e in entries.items() if not e["use_ref_motion"]][:3]
    for gid in marked:  # precomputed embeddings (at the test encoder's width) with a recognisable value
        torch.save(torch.full((5, 384), float(gid + 1)), data / "wanvideo_text_features" / "prompt_motion_detailed" / f"{gid}.pt")

    model, loaded = _recording_generator(monkeypatch)
    result = runner.run_mbench(tmp_path / "released.pt", prompts_path=MBENCH, out_dir=tmp_path / "out",
                               protocol="released", mbench_data=data, judge_factory=None, pose_scorer_factory=None)
    assert loaded["use_ema"] is False  # raw weights
    first = [c for c in model.calls if c["context"] is not None]
    assert len(model.calls) == 50 * len(first)  # 50 steps per batch, the first at s = 0.921 (t = 921.05)
    rows = []
    for call in first:
        n_text = sum(call["use_text"]) // 2  # the batch's rows, then a copy of each text-mode row
        b = len(call["lengths"]) - n_text
        rows += list(zip(call["lengths"][:b], call["use_text"][:b], call["ref_lengths"][:b], call["ref_nonzero"][:b]))
        # Guidance copies: the text-mode rows again, with the null context.
        assert all(call["use_text"][b:]) and sum(call["use_text"][:b]) == n_text
    assert sorted(rows) == sorted([(100, True, 100, False)] * 288 + [(50, False, 50, True)] * 162)
    contexts = torch.cat([c["context"] for c in first])
    for gid in marked:
        assert bool((contexts[:, :5] == gid + 1).all(-1).all(-1).any()), gid  # its file's tokens were fed
    plain = next(g for g, e in entries.items() if not e["use_ref_motion"] and g not in marked)
    encoded, _ = TextContext("minilm", 226).encode([entries[plain]["prompt_motion_detailed"]])
    assert bool((contexts - encoded).abs().amax((1, 2)).lt(1e-5).any())  # prompt_motion_detailed, not prompt
    meta = result.metadata
    assert (meta["protocol"], meta["sampler"], meta["weights"], meta["cfg_scale"]) == ("released", "released", "raw", 5.0)
    assert (meta["n_text_mode"], meta["n_reference_mode"], meta["postprocessing"]) == (288, 162, "none")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "generation protocol: released" in report and "velocity channels integrated" in report
    feats = np.load(tmp_path / "out" / "motions" / "features" / "0.npy")
    joints = np.load(tmp_path / "out" / "motions" / "0.npy")
    np.testing.assert_allclose(joints, features_to_joints_integrated(torch.from_numpy(feats)).numpy(), atol=1e-5)


def test_tiny_model_trains_with_the_released_recipe_on_the_builtin_clips(tmp_path):
    from vimogen_core.train.checkpoint import load_checkpoint
    from vimogen_core.train.generate import load_generator
    from vimogen_core.train.loop import train

    # The released objective predicts velocity; a small tiny keeps the test in seconds.
    small_tiny = {"prediction": "velocity", "dim": 64, "ffn_dim": 128, "num_heads": 4, "num_layers": 2}
    config = apply_overrides(get_train_preset("released"), [
        "model_preset=tiny", "text_encoder=minilm", "text_len=32", "data=builtin", "device=cpu", "bf16=false",
        "steps=4", "batch_size=4", "checkpoint_every=4", "log_every=2"]).replace(model_overrides=small_tiny)
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 4 and np.isfinite(result.final_loss)
    payload = load_checkpoint(result.checkpoint)
    group = payload["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.9, 0.95) and group["weight_decay"] == 1e-4
    generator = load_generator(result.checkpoint, use_ema=False)
    assert generator.sampler_config.name == "released"
    motion = generator.generate(["a person walks forward"], 30, steps=3)[0]
    assert motion.shape == (30, 276) and np.isfinite(motion).all()
