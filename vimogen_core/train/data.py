"""Training data: motion datasets and the per-sample conditioning draws (batches of them:
`train.batches`).

Every random choice for a sample (which motion, window, caption, text drop, routing, reference
corruption, flow time and noise) comes from a generator seeded by (seed, global sample number),
where the global sample number is step * global_batch + position in the global batch. So the
data a step sees is a pure function of the step: a resumed run continues exactly, and a run split
over N processes sees exactly the samples a single process would. For the same reason loader
workers (`batch_loader`) can draw batches ahead in any order: a worker draws a whole per-rank
batch for a step number, and the batches arrive in step order.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from vimogen_core.curation.captions import caption_short_forms
from vimogen_core.motion.representation import (REF_FEATURE_DIM, Normalizer, canonical_turn_and_shift,
                                                 reference_features, turn_and_move_array)
from vimogen_core.train.config import TrainConfig

# Separate streams of the per-sample seed so that adding a draw to one stage does not shift another.
_ORDER_STREAM, _SAMPLE_STREAM, _NOISE_STREAM, _SHORT_CAPTION_STREAM = 1, 2, 3, 4


# A motion drawn under length_rule "redraw" that is outside min..max frames is replaced by another;
# after this many draws in a row the data has (almost) no motion of a trainable length.
MAX_REDRAWS = 1000


@dataclass
class MotionItem:
    features: np.ndarray  # (T, 276) float32, normalised
    captions: list[str]  # motion-style descriptions
    source: str
    use_ref_allowed: bool = True  # the quality gate may forbid training the motion branch on a sample
    # (T, 276) the noise a teacher sampled this motion from (distillation pairs: the flow is trained
    # on the teacher's coupling of noise and motion, not on freshly drawn noise); None: draw noise.
    noise: np.ndarray | None = None
    video_captions: list[str] = field(default_factory=list)  # video-style descriptions
    path: str = ""  # the motion file's path, which the subset rules (config.*_path_markers) read
    reference: np.ndarray | None = None  # (T_ref, 276) normalised: the entry's own reference motion


def training_frames(n_frames: int, rng: np.random.Generator, config: TrainConfig) -> tuple[int, int]:
    """The frames of a motion that train: a random window ("crop") or all of them ("redraw", whose
    motions outside min..max frames draw_sample replaces)."""
    if config.length_rule == "redraw":
        return 0, n_frames
    if config.length_rule != "crop":
        raise ValueError(f"unknown length_rule {config.length_rule!r}: use 'crop' or 'redraw'")
    return random_window(n_frames, rng, config.min_frames, config.max_frames)


def training_window(motion: np.ndarray, rng: np.random.Generator, config: TrainConfig,
                    reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The frames of `motion` (T, 276) that train (`training_frames`), and the same frames of its
    reference motion. A window starting later than frame 0 is turned and moved as a clip starting
    there would be (frame 0 facing +Y with the pelvis at x = y = 0, as curation leaves every clip;
    the reference with it): left where the clip had it, a window from a run's middle starts metres
    away along the run, so the position channels would have to guess how far into its clip a
    motion began, and sampling, which starts every motion at x = y = 0, is asked for a start no
    window shares."""
    start, stop = training_frames(len(motion), rng, config)
    window = motion[start:stop]
    reference = None if reference is None else reference[start:stop]
    if start == 0:
        return window, reference
    yaw, shift = canonical_turn_and_shift(window)
    return (turn_and_move_array(window, yaw, shift),
            None if reference is None else turn_and_move_array(reference, yaw, shift))


class MotionDataset(Protocol):
    """What the training loop needs from a data source."""

    normalizer: Normalizer

    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator) -> MotionItem:
        """Item `index` (0 <= index < len), with a random window drawn from `rng`."""
        ...


def random_window(n_frames: int, rng: np.random.Generator, min_frames: int, max_frames: int) -> tuple[int, int]:
    """A window of min..max frames (all of it when the motion is shorter than min_frames)."""
    longest = min(max_frames, n_frames)
    length = int(rng.integers(min(min_frames, longest), longest + 1))
    start = int(rng.integers(0, n_frames - length + 1))
    return start, start + length


@lru_cache(maxsize=4)
def _builtin_clip_features(min_frames: int, with_mirrors: bool
                           ) -> tuple[list[str], list[np.ndarray], list[list[str]], str, list[list[str]]]:
    """Names, raw (T, 276) float32 features, captions and source of the built-in clips (and mirror
    images), and their video-style captions."""
    from vimogen_core.motion.motion import mirror
    from vimogen_core.sources.deepmimic import load_builtin_clips

    clips = load_builtin_clips(min_frames=min_frames)
    names, features, captions, video_captions = [], [], [], []
    for clip in clips:
        motions = [clip.motion, mirror(clip.motion)] if with_mirrors else [clip.motion]
        for motion, suffix in zip(motions, ("", "_mirror")):
            names.append(clip.name + suffix)
            features.append(motion.features().numpy().astype(np.float32))
            captions.append(list(clip.captions))
            video_captions.append([clip.video_caption] if clip.video_caption else [])
    return names, features, captions, clips[0].source, video_captions


class BuiltinClipDataset:
    """The 15 built-in DeepMimic clips and their mirror images, lengthened to
    `config.builtin_min_frames`; each draw is a random 40-200 frame window (length_rule "crop") or a whole clip ("redraw")."""

    def __init__(self, config: TrainConfig, normalizer: Normalizer | None = None):
        self.names, self.features, self.captions, self.source, self.video_captions = _builtin_clip_features(
            config.builtin_min_frames, config.mirror)
        self.normalizer = normalizer or Normalizer.fit(self.features)
        self.config = config
        self.lengths = np.array([len(f) for f in self.features])  # (N,) frames, for length bucketing

    def __len__(self) -> int:
        return len(self.features)

    def sample(self, index: int, rng: np.random.Generator) -> MotionItem:
        window = self.normalizer.normalize(training_window(self.features[index], rng, self.config)[0]).astype(np.float32)
        return MotionItem(window, self.captions[index], self.source, video_captions=self.video_captions[index],
                          path=self.names[index])


class ShardMotionDataset:
    """Adapter over the curated shard set (`vimogen_core.curation.dataset.ShardDataset`).
    Shards hold ready-made 40-200 frame windows; longer ones are cropped at random."""

    def __init__(self, config: TrainConfig, normalizer: Normalizer | None = None):
        from vimogen_core.curation.dataset import ShardDataset
        from vimogen_core.curation.statistics import fit_split_normalizer

        from vimogen_core.curation.shard_reader import verify_shard_files

        self.shards = ShardDataset(Path(config.data), split=config.split)
        if len(self.shards) == 0:
            raise ValueError(f"{config.data}: no samples in split {config.split!r}")
        # Every shard hashed once here (the loader workers at a time), not again in each worker.
        verify_shard_files({self.shards.root / name: sha for name, sha in self.shards.shard_sha256.items()},
                           processes=max(1, config.data_workers))
        self.normalizer = normalizer or fit_split_normalizer(config.data, config.split)[0]
        self.config = config
        self.origins = self._origins() if config.noisy_path_markers or config.local_loss_path_markers else None
        self.lengths = self.shards.lengths  # (N,) frames, for length bucketing

    def _origins(self) -> list[str]:
        """Each sample's motion file (manifest column `origin`), which the subset rules read."""
        from vimogen_core.curation.shard_reader import read_manifest

        table = read_manifest(Path(self.config.data), columns=["id", "origin"])
        origin = dict(zip(table["id"].to_pylist(), table["origin"].to_pylist()))
        return [origin[sample_id] for sample_id in self.shards.ids]

    def __len__(self) -> int:
        return len(self.shards)

    def prefetch(self, indices: list[int]) -> None:
        """Start reading and verifying these samples (one batch's) before they are drawn, all of them
        in flight together (ShardDataset.prefetch)."""
        self.shards.prefetch(indices)

    def sample(self, index: int, rng: np.random.Generator) -> MotionItem:
        item = self.shards[index]
        window = self.normalizer.normalize(training_window(item["features"].numpy(), rng, self.config)[0]).astype(np.float32)
        captions = [c for c in item["motion_text"] if c.strip()] or ([item["video_text"]] if item["video_text"] else [""])
        return MotionItem(window, captions, item["source"], video_captions=[item["video_text"]] if item["video_text"] else [],
                          path=self.origins[index] if self.origins is not None else "")


def _caption_list(value) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v) for v in values if str(v).strip()]


class Vimogen228kDataset:
    """A released ViMoGen-228K annotation JSON read in place, entry by entry as the released loader
    reads it: a list `motion_path` draws one path per fetch, a `ref_motion_path` motion is the
    entry's reference, every motion keeps its first 276 columns (sources/vimogen228k.py). Statistics:
    `normalizer` if given, else mean/std over all frames of all motion files."""

    def __init__(self, config: TrainConfig, normalizer: Normalizer | None = None):
        from vimogen_core.sources.vimogen228k import read_annotations

        self.annotation_json = Path(config.data)
        self.root = Path(config.data_root) if config.data_root else self.annotation_json.parent
        self.entries = read_annotations(self.annotation_json)
        if not self.entries:
            raise ValueError(f"{self.annotation_json}: no annotation entries")
        self.config = config
        self.normalizer = normalizer or Normalizer.fit(self._all_motions())

    def _all_motions(self) -> Iterator[np.ndarray]:
        from vimogen_core.sources.vimogen228k import load_vimogen_motion, motion_paths

        for index, entry in enumerate(self.entries):
            for path in motion_paths(entry, index, self.annotation_json):
                yield load_vimogen_motion(self.root / path)["motion"]

    def __len__(self) -> int:
        return len(self.entries)

    def sample(self, index: int, rng: np.random.Generator) -> MotionItem:
        from vimogen_core.sources.vimogen228k import read_record

        record = read_record(self.entries[index], index, self.annotation_json, self.root, rng=rng)
        motion, reference = training_window(record.motion, rng, self.config, record.reference_motion)
        features = self.normalizer.normalize(motion).astype(np.float32)
        if reference is not None:
            reference = self.normalizer.normalize(reference).astype(np.float32)
        return MotionItem(features, _caption_list(record.motion_text_annot), str(record.subset or ""),
                          video_captions=_caption_list(record.video_text_annot), path=record.motion_path,
                          reference=reference)


def build_dataset(config: TrainConfig, normalizer: Normalizer | None = None) -> MotionDataset:
    """The training data, normalised by `normalizer` (a resumed run's), else by the file
    `config.normalizer`, else by statistics fitted on the data itself."""
    if normalizer is None and config.normalizer:
        normalizer = Normalizer.load(config.normalizer)
    if config.data == "builtin":
        return BuiltinClipDataset(config, normalizer)
    path = Path(config.data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: training data not found (a shard manifest, a ViMoGen-228K "
                                "annotation .json, or 'builtin')")
    if path.suffix == ".json":
        return Vimogen228kDataset(config, normalizer)
    return ShardMotionDataset(config, normalizer)


def corrupt_reference(x: np.ndarray, rng: np.random.Generator, config: TrainConfig) -> np.ndarray:
    """A damaged copy of a normalised target (T, 276) for the motion branch to learn from: Gaussian
    noise on a random 0-40% of frames, 3-8% of frames replaced by a blend of their neighbours, and
    2% of frames dropped (zeroed: the model reads reference masks only as prefix lengths, so a
    dropped frame is a blank frame, not a masked one). Returns the reference features (T, 138).

    The rates are drawn per sample, where the released run draws them once per batch: a sample's
    data stays a function of its own index, so resumed and DDP-split runs see the same data."""
    n = len(x)
    out = x.copy()
    noisy = rng.random(n) < rng.uniform(0.0, config.ref_noise_max_fraction)  # (T,)
    std = config.ref_noise_std
    if config.ref_noise_std_spread > 0:
        std = rng.uniform(std - config.ref_noise_std_spread, std + config.ref_noise_std_spread)
    out[noisy] += rng.normal(0.0, std, size=(int(noisy.sum()), x.shape[1])).astype(np.float32)
    if n >= 3:
        n_blend = max(1, int(round(rng.uniform(*config.ref_blend_fraction) * n)))
        frames = rng.choice(np.arange(1, n - 1), size=min(n_blend, n - 2), replace=False)  # (K,)
        weight = rng.random(len(frames)).astype(np.float32)[:, None]  # (K, 1)
        if config.ref_blend_jitter != 1.0:
            weight = (0.5 + config.ref_blend_jitter * (weight - 0.5)).astype(np.float32)
        out[frames] = weight * x[frames - 1] + (1.0 - weight) * x[frames + 1]
    dropped = rng.random(n) < config.ref_dropout  # (T,)
    out[dropped] = 0.0
    return reference_features(out)


@dataclass
class SampleDraw:
    """Everything drawn for one training sample."""

    features: np.ndarray  # (T, 276) normalised target
    caption: str
    drop_text: bool
    use_text: bool  # routing: text branch (True) or motion branch (False)
    reference: np.ndarray  # (T_ref <= T, 138)
    time_seed: int  # seeds the torch generator for this sample's flow time and noise
    noise: np.ndarray | None = None  # (T, 276) paired noise (MotionItem.noise)
    local_loss: bool = False  # only the local pose (dims 0:126) is supervised


# dataset -> ((seed, epoch, batch_size, bucketing), order): one epoch's order is computed once, not per sample.
_EPOCH_ORDERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def epoch_order(dataset: MotionDataset, config: TrainConfig, epoch: int) -> np.ndarray:
    """(N,) the dataset indices in the order epoch `epoch` visits them: a permutation seeded by
    (seed, epoch). With length bucketing (config.length_bucketing = K > 0, on a dataset that lists
    its motions' `lengths`) the permutation is cut into chunks of K global batches, each chunk is
    sorted by length and cut into batches, and the batches of a chunk are shuffled: a batch then
    holds motions of similar length, so it pads less, and the order is still a function of
    (seed, epoch) alone."""
    key = (config.seed, epoch, config.batch_size, config.length_bucketing)
    cached = _EPOCH_ORDERS.get(dataset)
    if cached is not None and cached[0] == key:
        return cached[1]
    n = len(dataset)
    rng = np.random.default_rng((config.seed, _ORDER_STREAM, epoch))
    order = rng.permutation(n)
    lengths = getattr(dataset, "lengths", None)
    if config.length_bucketing < 0:
        raise ValueError(f"length_bucketing must be >= 0, got {config.length_bucketing}")
    if config.length_bucketing and lengths is not None:
        lengths = np.minimum(np.asarray(lengths), config.max_frames)  # crop windows are at most max_frames
        chunk = config.length_bucketing * config.batch_size
        pieces = []
        for start in range(0, n, chunk):
            members = order[start:start + chunk]
            members = members[np.argsort(lengths[members], kind="stable")]
            batches = [members[i:i + config.batch_size] for i in range(0, len(members), config.batch_size)]
            pieces += [batches[i] for i in rng.permutation(len(batches))]
        order = np.concatenate(pieces)
    try:
        _EPOCH_ORDERS[dataset] = (key, order)
    except TypeError:  # a dataset that cannot be weakly referenced is simply not cached
        pass
    return order


def draw_sample(dataset: MotionDataset, config: TrainConfig, global_index: int) -> SampleDraw:
    n = len(dataset)
    epoch, position = divmod(global_index, n)
    order = epoch_order(dataset, config, epoch)
    rng = np.random.default_rng((config.seed, _SAMPLE_STREAM, global_index))
    item = dataset.sample(int(order[position]), rng)
    redraws = 0
    while config.length_rule == "redraw" and not config.min_frames <= len(item.features) <= config.max_frames:
        redraws += 1
        if redraws > MAX_REDRAWS:
            raise ValueError(f"{MAX_REDRAWS} motions in a row outside {config.min_frames}-{config.max_frames} frames: "
                             "the data has (almost) none of a trainable length")
        item = dataset.sample(int(rng.integers(n)), rng)
    if config.caption_field not in ("motion", "video"):
        raise ValueError(f"unknown caption_field {config.caption_field!r}: use 'motion' or 'video'")
    captions = item.video_captions if config.caption_field == "video" else item.captions
    caption = captions[int(rng.integers(len(captions)))] if captions else ""
    if config.short_caption_prob > 0:
        # Drawn from its own stream: with the option off, every other draw is as before.
        short_rng = np.random.default_rng((config.seed, _SHORT_CAPTION_STREAM, global_index))
        forms = caption_short_forms(caption)
        if forms and short_rng.random() < config.short_caption_prob:
            caption = forms[int(short_rng.integers(len(forms)))]
    drop_text = bool(rng.random() < config.text_drop) or not caption.strip()
    noisy = item.source in config.noisy_sources or any(m in item.path for m in config.noisy_path_markers)
    p_text = config.p_text_noisy if noisy else config.p_text
    use_text = bool(rng.random() < p_text) or not item.use_ref_allowed
    if use_text:
        # No reference: zeros (never the target itself, which must not leak into the text branch).
        reference = np.zeros((len(item.features), REF_FEATURE_DIM), np.float32)
    else:
        # The entry's own reference motion if it has one, cut to the target's frames (the network
        # reads references frame by frame beside the target); else a corrupted copy of the target.
        source = item.features if item.reference is None else item.reference[: len(item.features)]
        reference = corrupt_reference(source, rng, config)
    local_loss = use_text and any(m in item.path for m in config.local_loss_path_markers)
    time_seed = int(np.random.default_rng((config.seed, _NOISE_STREAM, global_index)).integers(2**62))
    return SampleDraw(item.features, caption, drop_text, use_text, reference, time_seed, item.noise, local_loss=local_loss)
