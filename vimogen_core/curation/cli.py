"""`vimogen data ...`: the curation pipeline's commands (the DVC stages call exactly these)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from vimogen_core.config_overrides import apply_overrides, read_params


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="curate sources into validated, versioned shards")
    commands = data.add_subparsers(dest="data_command", required=True)

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--params", type=Path, default=None, help="params.yaml; its section for this command sets the config")
        parser.set_defaults(func=func)
        return parser

    p = command("sources", cmd_sources, "materialise the raw takes (built-in clips, simulated captures, synthetic video)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", dest="sources", action="append", default=None,
                   help="build only this source (repeatable; default: all)")
    p.add_argument("--inbox", type=Path, default=None, help="folder of new raw files laid out as <source>/**/<name>.npz (or .bvh for optical_mocap)")

    p = command("curate", cmd_curate, "resample, canonicalise, window, mirror and gate takes into chunk shards")
    p.add_argument("--sources", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workers", type=int, default=None, help="worker processes, each curating its own share of the takes (default: params or 1)")

    p = command("ingest-vimogen228k", cmd_ingest, "curate a released ViMoGen-228K layout (annotation JSON + .pt files)")
    p.add_argument("--annotations", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True, help="folder the annotation paths are relative to")
    p.add_argument("--out", type=Path, required=True)

    p = command("shard", cmd_shard, "pack curated chunks into per-split shards with a manifest")
    p.add_argument("--curated", type=Path, required=True, help="curated folder (or its manifest.parquet)")
    p.add_argument("--out", type=Path, required=True)

    p = command("validate", cmd_validate, "run the expectation suite on a manifest; exit 1 when it fails")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--report", type=Path, default=None)

    p = command("stats", cmd_stats, "streaming mean/std of the training split")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    for name, func, help_text in (("upload", cmd_upload, "upload a shard set to S3"), ("download", cmd_download, "download a shard set from S3")):
        p = command(name, func, help_text)
        p.add_argument("--dir", type=Path, required=True)
        p.add_argument("--bucket", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL)")


def _print(result) -> None:
    print(json.dumps(result.to_metadata(), indent=2, sort_keys=True, default=str))


def cmd_sources(args) -> int:
    from vimogen_core.sources.raw_takes import SourcesConfig, build_sources

    config = apply_overrides(SourcesConfig(), read_params(args.params, "sources"), f"{args.params}:sources")
    result = build_sources(args.out, config, **({"sources": tuple(args.sources)} if args.sources else {}), inbox=args.inbox)
    _print(result)
    return 0


def cmd_curate(args) -> int:
    import torch

    from vimogen_core.curation.config import curation_settings
    from vimogen_core.curation.pipeline import curate_samples
    from vimogen_core.curation.source_index import SourceIndex

    torch.set_num_threads(1)  # tiny per-take tensors: threads only contend; use --workers for parallelism
    config, judge, workers = curation_settings(read_params(args.params, "curate"), f"{args.params}:curate")
    result = curate_samples(SourceIndex(str(args.sources)), args.out, config, judge, workers=args.workers or workers, progress=sys.stderr.isatty())
    _print(result)
    return 0


def cmd_ingest(args) -> int:
    import torch

    from vimogen_core.curation.config import curation_settings
    from vimogen_core.curation.vimogen228k import ingest_vimogen228k

    torch.set_num_threads(1)
    config, judge, workers = curation_settings(read_params(args.params, "ingest"), f"{args.params}:ingest", default_preset="released")
    result = ingest_vimogen228k(args.annotations, args.root, args.out, config, judge, workers=workers, progress=sys.stderr.isatty())
    _print(result)
    return 0


def cmd_shard(args) -> int:
    from vimogen_core.curation.sharding import write_shards
    from vimogen_core.curation.shards import MANIFEST_NAME

    params = read_params(args.params, "shard")
    manifest = args.curated if args.curated.suffix == ".parquet" else args.curated / MANIFEST_NAME
    result = write_shards(manifest, args.out, samples_per_shard=int(params.get("samples_per_shard", 2000)), progress=sys.stderr.isatty())
    _print(result)
    return 0


def cmd_validate(args) -> int:
    from vimogen_core.curation.expectations import VALIDATION_PRESETS, validate_manifest

    params = dict(read_params(args.params, "validate"))
    preset = params.pop("preset", "default")
    if preset not in VALIDATION_PRESETS:
        raise ValueError(f"{args.params}:validate: unknown preset {preset!r}; known: {sorted(VALIDATION_PRESETS)}")
    config = apply_overrides(VALIDATION_PRESETS[preset], params, f"{args.params}:validate")
    result = validate_manifest(args.manifest, config, report_path=args.report)
    if result.success:
        print(f"{args.manifest}: all {len(result.checks)} expectations passed ({result.n_rows} samples)")
        return 0
    print(f"{args.manifest}: {len(result.failed)} of {len(result.checks)} expectations failed:", file=sys.stderr)
    for name in result.failed:
        print(f"  FAILED {name}", file=sys.stderr)
    return 1


def cmd_stats(args) -> int:
    from vimogen_core.curation.statistics import compute_statistics

    params = read_params(args.params, "stats")
    _print(compute_statistics(args.manifest, args.out, split=params.get("split", "train")))
    return 0


def _storage(args):
    from vimogen_core.curation.storage import S3Storage

    return S3Storage(bucket=args.bucket, endpoint_url=args.endpoint_url)


def cmd_upload(args) -> int:
    _print(_storage(args).upload_shard_set(args.dir, args.prefix))
    return 0


def cmd_download(args) -> int:
    _print(_storage(args).download_shard_set(args.prefix, args.dir))
    return 0
