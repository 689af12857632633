"""Shards: packing, random access, checksums, training batches, streaming statistics, atomicity."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vimogen_core.curation.batch_reader import ParallelBatchReader
from vimogen_core.curation.dataset import ShardDataset
from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.pipeline import curate_samples
from vimogen_core.curation.source_index import SourceIndex
from vimogen_core.sources.raw_takes import SourcesConfig, build_sources
from vimogen_core.curation.records import RawSample
from vimogen_core.curation.sharding import write_shards
from vimogen_core.curation.shard_reader import ShardReader, iter_shard_samples
from vimogen_core.curation.statistics import compute_statistics
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.motion import canonicalize, mirror
from vimogen_core.motion.representation import FEATURE_DIM, Normalizer
from vimogen_core.sources.deepmimic import load_builtin_clip
from vimogen_core.train.config import get_train_preset
from vimogen_core.train.batches import batch_loader, rank_batches
from vimogen_core.train.data import build_dataset

CLIPS = ("walk", "kick", "cartwheel", "crawl", "dance_b", "getup_faceup")


def optical_takes(names=CLIPS, min_frames=121):
    for name in names:
        clip = load_builtin_clip(name, min_frames=min_frames)
        yield RawSample(id=f"deepmimic/{name}", source="optical_mocap", subset="deepmimic", origin=clip.meta["file"],
                        motion=clip.motion, motion_captions=tuple(clip.captions), video_caption=clip.video_caption)


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    # Small chunks/shards so the set spans several files; fractions that give every split a clip.
    config = CurationConfig(samples_per_chunk=3, split_fractions=(0.6, 0.2, 0.2))
    curated = curate_samples(optical_takes(), root / "curated", config)
    shards = write_shards(curated.manifest_path, root / "shards", samples_per_shard=4)
    return curated, shards


def test_round_trip_matches_features_computed_directly(shard_set):
    curated, shards = shard_set
    assert curated.n_accepted == 2 * len(CLIPS)  # every clip fits one window; each has its mirror
    assert shards.n_samples == curated.n_accepted
    assert shards.n_shards >= 3
    walk = canonicalize(load_builtin_clip("walk", min_frames=121).motion)
    expected = {"deepmimic/walk": walk.features().numpy(), "deepmimic/walk~mirror": mirror(walk).features().numpy()}
    found = {}
    for split in ("train", "val", "test"):
        dataset = ShardDataset(shards.manifest_path, split=split)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["features"].shape == (item["n_frames"], FEATURE_DIM)
            if item["id"] in expected:
                found[item["id"]] = item
    assert set(found) == set(expected)
    np.testing.assert_array_equal(found["deepmimic/walk"]["features"].numpy(), expected["deepmimic/walk"])  # bit-exact
    # The curated mirror reflects joints directly instead of re-running forward kinematics.
    np.testing.assert_allclose(found["deepmimic/walk~mirror"]["features"].numpy(), expected["deepmimic/walk~mirror"], atol=1e-6)
    manifest = pq.read_table(shards.manifest_path).to_pandas()
    assert {"id", "source", "subset", "split", "shard", "offset", "n_frames", "motion_text", "video_text", "checksum",
            "stat_jitter", "stat_max_joint_speed"} <= set(manifest.columns)
    assert manifest.groupby("shard")["split"].nunique().max() == 1  # shards are grouped by split
    assert (manifest.groupby("shard").size() <= 4).all()


def test_chunks_of_shard_size_are_adopted_by_link_with_the_same_content(shard_set, tmp_path):
    curated, repacked = shard_set  # chunks of 3 re-packed into shards of 4: every frame copied
    adopted = write_shards(curated.manifest_path, tmp_path / "adopted", samples_per_shard=3)
    curated_dir = Path(curated.manifest_path).parent
    for shard in sorted((tmp_path / "adopted").glob("*.npy")):
        chunk = curated_dir / f"chunk-{shard.name}"  # split chunks: chunk-train-00000.npy -> train-00000.npy
        assert os.path.samefile(shard, chunk), shard.name  # a hard link, no second copy of the frames
    def samples(result):
        return {row["id"]: (row["split"], block.tobytes()) for row, block in iter_shard_samples(Path(result.manifest_path))}
    assert samples(adopted) == samples(repacked)
    assert adopted.n_samples == repacked.n_samples and adopted.n_frames == repacked.n_frames


def test_flipped_byte_fails_with_checksum_error_naming_the_shard(shard_set, tmp_path):
    _, shards = shard_set
    manifest = pq.read_table(shards.manifest_path).to_pandas()
    target = manifest.iloc[0]
    for position in ("data", "header"):
        copy = tmp_path / position
        copy.mkdir()
        for path in Path(shards.out_dir).iterdir():
            (copy / path.name).write_bytes(path.read_bytes())
        shard_path = copy / target["shard"]
        raw = bytearray(shard_path.read_bytes())
        offset = 128 + (int(target["offset"]) + 3) * FEATURE_DIM * 4 + 5 if position == "data" else 40
        raw[offset] ^= 0x01
        shard_path.write_bytes(bytes(raw))
        dataset = ShardDataset(copy / "manifest.parquet", split=target["split"])
        with pytest.raises(MotionDataError, match=str(target["shard"])) as err:
            dataset[dataset.ids.index(target["id"])]
        assert "checksum" in str(err.value)

    # Without the whole-file check, the per-sample checksum still catches it and names sample and shard.
    reader = ShardReader(tmp_path / "data" / target["shard"])
    with pytest.raises(MotionDataError, match=rf"{target['shard']}.*checksum mismatch for sample {target['id']}"):
        reader.read(int(target["offset"]), int(target["n_frames"]), target["checksum"], target["id"])
    with pytest.raises(MotionDataError, match=rf"{target['shard']}.*checksum mismatch for sample {target['id']}"):
        reader.read_async(int(target["offset"]), int(target["n_frames"]), target["checksum"], target["id"]).result()


def test_prefetched_samples_are_the_mapped_ones_and_a_cut_shard_is_named(shard_set, tmp_path):
    _, shards = shard_set
    dataset = ShardDataset(shards.manifest_path, split="train")
    order = [int(i) for i in np.random.default_rng(0).permutation(len(dataset))]
    mapped = [dataset[i]["features"] for i in order]  # one at a time from the memory map
    dataset.prefetch(order + order[:2])  # all in flight in the reader threads; a repeated index is read once
    assert sorted(dataset._pending) == sorted(order)
    for index, expected in zip(order, mapped):
        assert torch.equal(dataset[index]["features"], expected)
    assert not dataset._pending
    dataset.prefetch(order[:2])
    dataset.prefetch(order[2:3])  # what the earlier call started and nobody took is dropped
    assert list(dataset._pending) == order[2:3]
    out = np.full((int(dataset.lengths[order].sum()), FEATURE_DIM), np.nan, np.float32)
    dataset.read_into(order, out)  # straight into the caller's rows, e.g. a reader process's shared ring
    np.testing.assert_array_equal(out, torch.cat(mapped).numpy())
    with pytest.raises(ValueError, match=f"out has {len(out) + 1} rows, the samples {len(out)}"):
        dataset.read_into(order, np.zeros((len(out) + 1, FEATURE_DIM), np.float32))
    # Direct reads (O_DIRECT, block-aligned spans) and reads through the page cache give the same bytes.
    assert dataset._reader(dataset.shards[order[0]])._direct_fd >= 0, "the test's tmp dir should allow O_DIRECT"
    buffered = ShardDataset(shards.manifest_path, split="train")
    for shard in set(buffered.shards):
        buffered._reader(shard)._direct_fd = -1
    through_cache = np.full_like(out, np.nan)
    buffered.read_into(order, through_cache)
    np.testing.assert_array_equal(through_cache, out)

    row = pq.read_table(shards.manifest_path).to_pylist()[-1]
    cut = tmp_path / row["shard"]
    cut.write_bytes((Path(shards.out_dir) / row["shard"]).read_bytes()[: 128 + (row["offset"] + 2) * FEATURE_DIM * 4])
    reader = ShardReader(cut, mmap=False)  # the header still claims the rows the cut removed
    with pytest.raises(MotionDataError, match=rf"{row['shard']}.*sample {row['id']} at rows .* is truncated"):
        reader.read_async(row["offset"], row["n_frames"], row["checksum"], row["id"]).result()


def test_loader_workers_draw_the_batches_one_process_draws(shard_set):
    """Each DataLoader worker (forked after this process started its reader threads) prefetches its
    batches in reader threads of its own, and draws what one process draws."""
    _, shards = shard_set
    config = replace(get_train_preset("tiny"), data=str(shards.manifest_path), batch_size=4, data_workers=2)
    dataset = build_dataset(config)
    here = rank_batches(dataset, config, start_step=0, rank=0, world_size=1)
    expected = [next(here) for _ in range(4)]
    for batch, want in zip(batch_loader(dataset, config, 0, 4, 0, 1), expected, strict=True):
        assert torch.equal(batch.x0, want.x0) and batch.captions == want.captions


def test_training_batches_of_a_shard_set_pad_and_mask(shard_set):
    """The batching that runs: the training loop's draws over the shard set, zero-padded with masks."""
    _, shards = shard_set
    config = replace(get_train_preset("tiny"), data=str(shards.manifest_path), batch_size=4)
    dataset = build_dataset(config)
    assert len(dataset) == shards.by_split["train"]
    batches = rank_batches(dataset, config, start_step=0, rank=0, world_size=1)
    for _ in range(3):
        batch = next(batches)
        lengths = batch.x_mask.sum(1)  # (B,)
        assert batch.x0.shape == (4, int(lengths.max()), FEATURE_DIM)
        assert ((config.min_frames <= lengths) & (lengths <= config.max_frames)).all()
        assert batch.x0[~batch.x_mask].abs().sum() == 0
        assert torch.equal(batch.reference_mask, batch.x_mask)


def test_streaming_statistics_equal_the_direct_computation(shard_set, tmp_path):
    _, shards = shard_set
    result = compute_statistics(shards.manifest_path, tmp_path, split="train")
    train = np.concatenate([block for _, block in iter_shard_samples(Path(shards.manifest_path), split="train")]).astype(np.float64)
    assert result.n_frames == len(train) and result.n_samples == shards.by_split["train"]
    normalizer = Normalizer.load(result.normalizer_path)
    np.testing.assert_allclose(normalizer.mean, train.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(normalizer.std, np.maximum(train.std(0), Normalizer.MIN_STD), rtol=1e-4, atol=1e-6)
    dataset = ShardDataset(shards.manifest_path, split="train", normalizer=normalizer)
    normalised = torch.cat([dataset[i]["features"] for i in range(len(dataset))])
    assert normalised.mean(0).abs().max() < 1e-3


_KILLABLE_RUN = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from dataclasses import replace
    from vimogen_core.curation.config import CurationConfig
    from vimogen_core.curation.pipeline import curate_samples
    from vimogen_core.curation.records import RawSample
    from vimogen_core.sources.deepmimic import load_builtin_clip

    clip = load_builtin_clip("walk", min_frames=401)
    def takes():
        for i in range(int(sys.argv[2])):
            yield RawSample(id=f"take/{i}", source="optical_mocap", subset="deepmimic", origin="walk",
                            motion=replace(clip.motion, fps=20.0 + (i % 7)), motion_captions=("a person walks",))
    result = curate_samples(takes(), sys.argv[1], CurationConfig(samples_per_chunk=8))
    print("DONE", result.n_accepted)
    """
)


@pytest.mark.slow
def test_killed_run_leaves_no_partial_shard_and_rerun_completes(tmp_path):
    out = tmp_path / "curated"
    script = tmp_path / "run.py"
    script.write_text(_KILLABLE_RUN)
    process = subprocess.Popen([sys.executable, str(script), str(out), "400"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("chunk-*.npy"))) < 2:
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    visible = sorted(out.glob("chunk-*.npy"))
    assert len(visible) >= 2
    assert not (out / "manifest.parquet").exists()  # an interrupted run publishes no manifest
    for path in visible:  # every file under a shard name is complete
        array = np.load(path, mmap_mode="r")
        assert array.shape[1] == FEATURE_DIM and path.stat().st_size == 128 + array.nbytes
        assert array.shape[0] > 0 and np.isfinite(np.asarray(array)).all()

    rerun = subprocess.run([sys.executable, str(script), str(out), "40"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "DONE" in rerun.stdout
    assert not list(out.glob(".*tmp-*"))  # leftovers of the killed run are gone
    dataset = ShardDataset(out / "manifest.parquet", split=None)
    assert len(dataset) == int(rerun.stdout.split()[-1]) > 0
    assert sorted(p.name for p in out.glob("chunk-*.npy")) == sorted(set(dataset.shards))  # no stale shards remain
    for index in range(len(dataset)):
        dataset[index]


def test_two_worker_processes_curate_the_same_samples_as_one(tmp_path):
    build_sources(tmp_path / "sources", SourcesConfig(clips=("walk", "kick", "crawl", "punch")),
                  sources=("optical_mocap", "in_the_wild_video"))
    config = CurationConfig(samples_per_chunk=3, split_fractions=(0.6, 0.2, 0.2))
    one = curate_samples(SourceIndex(str(tmp_path / "sources")), tmp_path / "one", config, workers=1)
    two = curate_samples(SourceIndex(str(tmp_path / "sources")), tmp_path / "two", config, workers=2)

    def samples(manifest):
        return {row["id"]: (row["split"], row["checksum"], block.tobytes()) for row, block in iter_shard_samples(Path(manifest))}

    def quarantined(result):
        return {row["id"]: row["gates"] for row in pq.read_table(result.quarantine_path).to_pylist()}

    assert samples(two.manifest_path) == samples(one.manifest_path) and len(samples(one.manifest_path)) > 6
    assert quarantined(two) == quarantined(one)
    for key in ("n_takes", "n_accepted", "n_rejected", "by_source", "by_split", "rejected_by_gate"):
        assert getattr(two, key) == getattr(one, key), key
    chunks = sorted(path.name for path in (tmp_path / "two").glob("chunk-*.npy"))
    assert any("-p0-" in name for name in chunks) and any("-p1-" in name for name in chunks)  # each worker its own
    assert not [path for path in (tmp_path / "two").iterdir() if path.name.startswith(".")]  # no part manifest left
    # The shard stage adopts the workers' full chunks and re-packs their partial ones: same shard set content.
    shards_one = write_shards(one.manifest_path, tmp_path / "shards-one", samples_per_shard=3)
    shards_two = write_shards(two.manifest_path, tmp_path / "shards-two", samples_per_shard=3)
    assert samples(shards_two.manifest_path) == samples(shards_one.manifest_path)
    assert shards_two.by_split == shards_one.by_split
    linked = [shard for shard in (tmp_path / "shards-two").glob("*.npy") if os.stat(shard).st_nlink > 1]
    assert linked, "full worker chunks are adopted by hard link"

    with pytest.raises(ValueError, match="TakeSource"):
        curate_samples(optical_takes(), tmp_path / "plain", config, workers=2)


def test_reader_processes_give_each_batch_in_order_and_name_a_damaged_sample(shard_set, tmp_path):
    _, shards = shard_set
    dataset = ShardDataset(shards.manifest_path, split="train")
    order = [int(i) for i in np.random.default_rng(1).permutation(len(dataset))]
    batches = [[i] for i in order] + [order[:2], order[::-1]]
    with ParallelBatchReader(dataset, batches, batch_size=len(order), processes=2, in_flight=2) as reader:
        read = [batch.copy() for batch in reader]  # more batches than ring slots: each slot is refilled once the next is taken
    with ParallelBatchReader(dataset, batches[:1], batch_size=1, processes=1) as reader:
        with pytest.raises(ValueError, match="read-only"):
            next(reader)[0, 0] = 0.0  # a lent ring slot: the consumer copies, never writes into the ring
    assert len(read) == len(batches) > 2
    for batch, frames in zip(batches, read):
        np.testing.assert_array_equal(frames, torch.cat([dataset[i]["features"] for i in batch]).numpy())
    with pytest.raises(ValueError, match="a batch of 2 samples does not fit batch_size 1"):
        with ParallelBatchReader(dataset, [order[:2]], batch_size=1, processes=1) as reader:
            list(reader)

    # A byte flipped on disk after the reader opened the shard: the consumer gets the reader
    # process's error, naming shard and sample, when it reaches that batch.
    copy = tmp_path / "damaged"
    shutil.copytree(Path(shards.out_dir), copy)
    damaged = ShardDataset(copy / "manifest.parquet", split="train")
    target = order[2]
    assert len(set(damaged.shards)) == 1
    with ParallelBatchReader(damaged, [[order[0]], [order[1]], [target]], batch_size=1, processes=1, in_flight=1) as reader:
        next(reader)  # one slot: the target's batch is sent only when the second batch is taken
        with open(copy / damaged.shards[target], "r+b") as handle:
            handle.seek(128 + int(damaged.offsets[target]) * FEATURE_DIM * 4 + 10)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
        next(reader)
        with pytest.raises(MotionDataError, match=rf"{damaged.shards[target]}: checksum mismatch for sample {damaged.ids[target]}"):
            next(reader)
