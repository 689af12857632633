"""Data loading against what training consumes, in one run. Prints JSON.

Builds a shard set of --samples samples (default 228,000, about 49 GB: the ViMoGen-228K size) from
the real built-in clips (random 190-200 frame windows of the 15 DeepMimic clips and their mirror
images, written through the curation shard writer, so every sample and shard carries its SHA-256),
then measures, with the page cache of the shard files dropped before each read measurement
(posix_fadvise DONTNEED, no root needed):

- this machine's limits: sequential read speed of the disk (1 and 2 streams), SHA-256 speed of
  the cores (one process per core), and the disk's best rate for sample-sized reads at random
  offsets (direct, no checksum; 1, 8, READ_THREADS and twice that in flight per process, one
  process per core), and the samples/s they allow at the set's mean sample size;
- the start-up verification: every shard hashed once against its manifest digest (in parallel);
- random access with checksum verification: batches of samples in a random order, each sample's
  bytes hashed against its manifest checksum, read by curation.batch_reader.ParallelBatchReader
  (reader processes with their reader threads, direct reads, a shared ring the batches cross in;
  the training loader's ShardDataset.prefetch uses the same threads), in three slices alternating
  with the disk's raw random reads (at the best in-flight count above), because this virtual
  disk's speed drifts with what it served minutes before; and without the reader threads (one at
  a time from the memory map, another random order); with the CPU time each sample cost;
- the training draws: `train.batches.batch_loader` (workers drawing whole batches of the `small`
  preset: window, normalisation, reference corruption, collation) over the same set;
- the `small` training step's consumption on this CPU (benchmarks/train_step.py's measure);
and the target: min(5,000 samples/s, 80% of the machine's limit: the lowest of sequential read,
SHA-256 and the raw random reads beside the loader's). The shard set is deleted after
measuring unless --keep.

    flock /tmp/bench.lock .venv/bin/python benchmarks/data_loading.py [--samples 228000] [--root DIR]
        [--workers 2] [--readers 3] [--seconds 30] [--keep | --reuse]
    .venv/bin/python benchmarks/data_loading.py --samples 4000 --seconds 5    # a quick run
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vimogen_core.curation.batch_reader import ParallelBatchReader
from vimogen_core.curation.dataset import ShardDataset
from vimogen_core.curation.records import CuratedSample
from vimogen_core.curation.shards import MANIFEST_NAME, ManifestWriter, ShardSetWriter
from vimogen_core.curation.shard_reader import DIRECT_ALIGN, READ_THREADS, verify_shard_files
from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.batches import batch_loader
from vimogen_core.train.data import BuiltinClipDataset, build_dataset

WINDOW_FRAMES = (190, 200)  # mean 195 frames x 1,104 bytes: 228K samples are about 49 GB
READ_CHUNK = 8 << 20


def build_shard_set(root: Path, samples: int, seed: int = 0) -> dict:
    clips = BuiltinClipDataset(apply_overrides(get_train_preset("tiny"), {"builtin_min_frames": WINDOW_FRAMES[1] + 20}))
    rng = np.random.default_rng(seed)
    manifest = ManifestWriter(root / MANIFEST_NAME)
    writer = ShardSetWriter(root, "bench", manifest, samples_per_shard=2000)
    started = time.perf_counter()
    for i in range(samples):
        clip = int(rng.integers(len(clips)))
        feats = clips.features[clip]  # (T, 276) raw features
        length = int(rng.integers(WINDOW_FRAMES[0], WINDOW_FRAMES[1] + 1))
        start = int(rng.integers(0, len(feats) - length + 1))
        writer.add(CuratedSample(id=f"bench-{i:06d}", group_id=clips.names[clip], source=clips.source, subset="builtin",
                                 split="train", origin=clips.names[clip], features=feats[start:start + length],
                                 motion_captions=tuple(clips.captions[clip]), video_caption="", mirrored="_mirror" in clips.names[clip],
                                 window_start=start))
    summary = writer.close()
    manifest.close()
    clips.normalizer.save(root / "normalizer.npz")
    wall = time.perf_counter() - started
    return {"samples": summary.n_samples, "shards": len(summary.shard_names), "bytes": summary.n_bytes,
            "gb": round(summary.n_bytes / 1e9, 2), "mean_sample_bytes": round(summary.n_bytes / summary.n_samples),
            "build_s": round(wall, 1), "build_gb_per_s": round(summary.n_bytes / 1e9 / wall, 3)}


def drop_page_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _read_files(paths: list[Path], limit_bytes: int) -> int:
    done = 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while done < limit_bytes and (chunk := handle.read(READ_CHUNK)):
                done += len(chunk)
        if done >= limit_bytes:
            break
    return done


def sequential_read_gb_per_s(paths: list[Path], streams: int, limit_bytes: int) -> float:
    """Cold-cache sequential reads: `streams` processes, each through its own files."""
    drop_page_cache(paths)
    groups = [paths[i::streams] for i in range(streams)]
    started = time.perf_counter()
    with ProcessPoolExecutor(streams) as pool:
        done = sum(pool.map(_read_files, groups, [limit_bytes // streams] * streams))
    return done / 1e9 / (time.perf_counter() - started)


def _random_reads(args: tuple[list[str], int, float, int, int]) -> int:
    paths, size, seconds, threads, seed = args
    import mmap
    import threading
    from concurrent.futures import ThreadPoolExecutor

    fds = [os.open(path, os.O_RDONLY | os.O_DIRECT) for path in paths]  # the disk itself, no page cache
    span = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
    buffers = threading.local()

    def read(pick: tuple[int, int]) -> int:
        if not hasattr(buffers, "span"):
            buffers.span = mmap.mmap(-1, span)  # page-aligned, as direct reads need
        return os.preadv(pick[0], [buffers.span], pick[1])

    rng = np.random.default_rng(seed)
    last_block = (os.fstat(fds[0]).st_size - span) // DIRECT_ALIGN
    done, started = 0, time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() - started < seconds:
            picks = [(fds[int(rng.integers(len(fds)))], int(rng.integers(0, last_block)) * DIRECT_ALIGN) for _ in range(4 * threads)]
            done += sum(pool.map(read, picks))
    for fd in fds:
        os.close(fd)
    return int(done / (time.perf_counter() - started))


def random_read_gb_per_s(paths: list[Path], size: int, processes: int, threads: int, seconds: float = 10.0) -> float:
    """Reads of `size` bytes at random block-aligned offsets, straight from the disk (O_DIRECT),
    `processes` x `threads` in flight, no checksum: the most sample-sized random reads per second
    the disk gives, whatever reads them."""
    with ProcessPoolExecutor(processes) as pool:
        jobs = [([str(p) for p in paths], size, seconds, threads, seed) for seed in range(processes)]
        return sum(pool.map(_random_reads, jobs)) / 1e9


def _sha256_for(seconds: float) -> int:
    buffer = np.random.default_rng(0).bytes(64 << 20)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        hashlib.sha256(buffer).digest()
        done += len(buffer)
    return int(done / (time.perf_counter() - started))


def sha256_gb_per_s(processes: int, seconds: float = 3.0) -> float:
    with ProcessPoolExecutor(processes) as pool:
        return sum(pool.map(_sha256_for, [seconds] * processes)) / 1e9


def _verified_reads_for(reads: Iterator[np.ndarray], seconds: float) -> tuple[int, int, float, float]:
    """Take batches from `reads` for `seconds`: (samples, frames, wall s, CPU s of this process)."""
    samples = frames = 0
    cpu, started = sum(os.times()[:2]), time.perf_counter()
    for features, count in reads:
        samples += count
        frames += features.shape[0]
        if time.perf_counter() - started > seconds:
            break
    return samples, frames, time.perf_counter() - started, sum(os.times()[:2]) - cpu


def random_access(manifest: Path, seconds: float, seed: int, batch: int = 64) -> dict:
    """Verified random reads one sample at a time from the memory map (through the page cache), in
    this process, batches of `batch` in a random order: the baseline for the reader threads."""
    dataset = ShardDataset(manifest, split="train", verify=True)
    drop_page_cache([dataset.root / name for name in dataset.shard_sha256])
    order = np.random.default_rng(seed).permutation(len(dataset)).tolist()
    reads = ((np.concatenate([dataset[i]["features"].numpy() for i in order[k:k + batch]]), len(order[k:k + batch]))
             for k in range(0, len(order), batch))
    samples, frames, wall, cpu = _verified_reads_for(reads, seconds)
    return {"samples": samples, "wall_s": round(wall, 2), "samples_per_s": round(samples / wall, 1),
            "gb_per_s": round(frames * 276 * 4 / 1e9 / wall, 3), "cpu_ms_per_sample": round(cpu / samples * 1e3, 3)}


def random_access_beside_disk(manifest: Path, paths: list[Path], mean_sample: float, processes: int, in_flight: int,
                              readers: int, seconds: float, rounds: int = 3, seed: int = 2, batch: int = 64) -> dict:
    """The loader's verified random reads (curation.batch_reader.ParallelBatchReader: `readers`
    reader processes, direct reads, each sample hashed against its checksum) and the disk's raw
    random reads (`processes` x `in_flight`, no checksum), alternating in `rounds` slices of
    `seconds` each. This virtual disk's speed drifts by tens of percent with what it served in the
    minutes before, so the two are compared slice by slice rather than minutes apart."""
    dataset = ShardDataset(manifest, split="train", verify=True)
    order = np.random.default_rng(seed).permutation(len(dataset)).tolist()
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    slices = []
    with ParallelBatchReader(dataset, batches, batch, processes=readers, in_flight=4 * readers) as loader:
        reads = ((features, len(indices)) for features, indices in zip(loader, batches))
        for _ in range(rounds):
            disk = random_read_gb_per_s(paths, int(mean_sample), processes, in_flight, seconds) * 1e9 / mean_sample
            samples, frames, wall, cpu = _verified_reads_for(reads, seconds)
            slices.append({"disk_random_reads_per_s": round(disk, 1), "verified_samples_per_s": round(samples / wall, 1),
                           "consumer_cpu_ms_per_sample": round(cpu / samples * 1e3, 3), "ratio": round(samples / wall / disk, 3)})
    read = sum(s["verified_samples_per_s"] for s in slices) * seconds
    if read >= len(dataset):
        raise SystemExit("the whole set was read: build more samples or measure for fewer seconds")
    return {"slices": slices, "seconds_per_slice": seconds, "reader_processes": readers, "reader_threads_each": READ_THREADS,
            "disk_processes": processes, "disk_in_flight_per_process": in_flight,
            "verified_samples_per_s_median": statistics.median(s["verified_samples_per_s"] for s in slices),
            "disk_random_reads_per_s_median": statistics.median(s["disk_random_reads_per_s"] for s in slices),
            "ratio_median": statistics.median(s["ratio"] for s in slices), "set_fraction_read": round(read / len(dataset), 3)}


def training_draws(manifest: Path, normalizer: Path, workers: int, seconds: float) -> dict:
    config = apply_overrides(get_train_preset("small"), {"data": str(manifest), "normalizer": str(normalizer),
                                                         "data_workers": workers, "prefetch_batches": 4})
    dataset = build_dataset(config)
    samples, started = 0, time.perf_counter()
    batches = batch_loader(dataset, config, 0, 10**9, 0, 1)
    for batch in batches:
        samples += len(batch.captions)
        if time.perf_counter() - started > seconds:
            break
    batches.close()
    wall = time.perf_counter() - started
    return {"preset": "small", "workers": workers, "batch": config.batch_size, "samples": samples,
            "samples_per_s": round(samples / wall, 1)}


def small_step_consumption() -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_step import measure

    row = measure("small", 32, 3, False, torch.device("cpu"))
    return {"preset": "small", "batch": 32, "precision": row["precision"], "threads": torch.get_num_threads(),
            "step_s": row["step_s_median"], "samples_per_s": row["samples_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=228_000)
    parser.add_argument("--root", default="/tmp/vimogen_data_loading", help="where the shard set is built")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--readers", type=int, default=len(os.sched_getaffinity(0)) + 1,
                        help="reader processes of the random-access loader (one more than the cores measured best here)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each timed read")
    parser.add_argument("--read-gb", type=float, default=8.0, help="bytes read per sequential-read measurement")
    parser.add_argument("--keep", action="store_true", help="keep the shard set after measuring")
    parser.add_argument("--reuse", action="store_true", help="measure a shard set --root already holds")
    args = parser.parse_args()
    load_at_start = os.getloadavg()  # other work on the machine shares its cores and disk
    root = Path(args.root)
    if args.reuse:
        if not (root / MANIFEST_NAME).is_file():
            parser.error(f"--reuse: {root / MANIFEST_NAME} not found")
        built = {"reused": str(root)}
    else:
        if root.exists() and any(root.iterdir()):
            parser.error(f"{root} is not empty (--reuse to measure it, or remove it)")
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        needed = args.samples * sum(WINDOW_FRAMES) / 2 * 276 * 4
        if needed > 0.9 * free:
            parser.error(f"{args.samples} samples need about {needed / 1e9:.0f} GB; {root} has {free / 1e9:.0f} GB free")
    try:
        if not args.reuse:
            built = build_shard_set(root, args.samples)
        dataset = ShardDataset(root / MANIFEST_NAME, split="train")
        shard_paths = sorted(dataset.root / name for name in dataset.shard_sha256)
        data_bytes = sum(p.stat().st_size for p in shard_paths)
        mean_sample = data_bytes / len(dataset)
        reads = {f"{n}_stream": round(sequential_read_gb_per_s(shard_paths, n, int(args.read_gb * 1e9)), 3) for n in (1, 2)}
        random_read = {f"{threads}_in_flight_per_process": round(random_read_gb_per_s(
            shard_paths, int(mean_sample), args.workers, threads), 3) for threads in (1, 8, READ_THREADS, 2 * READ_THREADS)}
        best_in_flight = int(max(random_read, key=random_read.get).split("_")[0])
        sha = sha256_gb_per_s(args.workers)
        drop_page_cache(shard_paths)
        started = time.perf_counter()
        verified = verify_shard_files(dict(zip(shard_paths, [dataset.shard_sha256[p.name] for p in shard_paths])),
                                      processes=args.workers)
        verify_s = time.perf_counter() - started
        plain = random_access(root / MANIFEST_NAME, args.seconds, seed=1)
        access = random_access_beside_disk(root / MANIFEST_NAME, shard_paths, mean_sample, args.workers, best_in_flight,
                                           args.readers, args.seconds / 3)
        # Random access cannot beat the disk's rate for sample-sized random reads, which on this
        # virtual disk is well below its sequential speed: the limit is the lowest of the three,
        # the random-read rate taken beside the loader's.
        disk_random_gb = access["disk_random_reads_per_s_median"] * mean_sample / 1e9
        limit_gb = min(max(reads.values()), sha, disk_random_gb)
        drop_page_cache(shard_paths)
        draws = training_draws(root / MANIFEST_NAME, root / "normalizer.npz", args.workers, args.seconds)
        consumption = small_step_consumption()
        limit_samples = limit_gb * 1e9 / mean_sample
        target = min(5000.0, 0.8 * limit_samples)
        report = {
            "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), "unknown"),
            "cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
            "load_average_at_start_1_5_15": load_at_start,
            "shard_set": {**built, "samples": len(dataset), "data_gb": round(data_bytes / 1e9, 2),
                          "mean_sample_bytes": round(mean_sample)},
            "machine_limit": {"sequential_read_gb_per_s": reads, "sha256_gb_per_s": round(sha, 3),
                              "random_read_gb_per_s": random_read,
                              "random_read_samples_per_s": {k: round(v * 1e9 / mean_sample, 1) for k, v in random_read.items()},
                              "random_read_processes": args.workers,
                              "random_read_beside_the_loader_gb_per_s": round(disk_random_gb, 3),
                              "sha256_processes": args.workers, "limit_gb_per_s": round(limit_gb, 3),
                              "limit_samples_per_s": round(limit_samples, 1)},
            "startup_verification": {"gb": round(verified / 1e9, 2), "s": round(verify_s, 1),
                                     "gb_per_s": round(verified / 1e9 / verify_s, 3) if verify_s > 0 else None},
            "random_access_verified_beside_disk": access,
            "random_access_verified_without_reader_threads": plain,
            "training_draws": draws,
            "small_step_on_cpu": consumption,
            "target_samples_per_s": round(target, 1),
            "random_access_samples_per_s": access["verified_samples_per_s_median"],
            "random_access_meets_target": access["verified_samples_per_s_median"] >= target,
            "random_access_over_5000_samples_per_s": round(access["verified_samples_per_s_median"] / 5000, 3),
            "random_access_over_limit": round(access["verified_samples_per_s_median"] / limit_samples, 3),
            "draws_over_small_step_consumption": round(draws["samples_per_s"] / consumption["samples_per_s"], 1),
            "random_access_over_released_h200_120_samples_per_s": round(access["verified_samples_per_s_median"] / 120, 1),
            "load_average_at_end_1_5_15": os.getloadavg(),
        }
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(root, ignore_errors=True)
    report["shard_set"]["deleted_after_measuring"] = not args.keep and not args.reuse
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
