"""The Great Expectations (1.x) suite over a shard manifest.

GX is imported inside `validate_manifest` only, so the library stays importable without it. The
suite runs in an ephemeral context on a pandas data frame: the manifest plus a few derived columns
(caption count, train indicator). The result names every failed expectation.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vimogen_core.curation.records import SPLITS
from vimogen_core.curation.shard_reader import read_manifest
from vimogen_core.motion.representation import FEATURE_DIM
from vimogen_core.files import atomic_write_bytes
from vimogen_core.sources import SOURCES

# Plausible ranges of the per-sample statistics (metres, m/s); finite values only.
_STAT_RANGES = {
    "stat_jitter": (0.0, 1.0),
    "stat_mean_joint_speed": (0.0, 10.0),
    "stat_max_joint_speed": (0.0, 15.0),
    "stat_root_travel": (0.0, 200.0),
    "stat_min_height": (-1.0, 1.5),
    "stat_max_height": (0.2, 3.0),
    "stat_max_bone_deviation": (0.0, 0.1),
    "stat_femur_length": (0.2, 0.7),
    "stat_feature_abs_max": (0.0, 100.0),
}


@dataclass(frozen=True)
class ValidationConfig:
    min_frames: int = 40
    max_frames: int = 200
    allowed_sources: tuple[str, ...] = SOURCES
    required_splits: tuple[str, ...] = SPLITS
    train_fraction_range: tuple[float, float] = (0.5, 0.98)
    stat_ranges: tuple[tuple[str, tuple[float, float]], ...] = tuple(_STAT_RANGES.items())
    # Also read every sample's frames from its shard: the feature width and the non-finite count
    # (generated data, e.g. teacher samples, is checked on what it holds, not on its stats alone).
    frame_checks: bool = False


VALIDATION_PRESETS = {
    "default": ValidationConfig(),
    # A subset of a corpus (one split only, e.g. a released test split) need not hold every split.
    "any_split": ValidationConfig(required_splits=(), train_fraction_range=(0.0, 1.0)),
}


@dataclass
class ValidationResult:
    manifest_path: str
    success: bool
    n_rows: int
    failed: list[str] = field(default_factory=list)  # names of failed expectations, e.g. "expect_column_values_to_be_unique(id)"
    checks: list[dict] = field(default_factory=list)  # every expectation: name, success, details

    def to_metadata(self) -> dict:
        return {"success": self.success, "n_rows": self.n_rows, "n_expectations": len(self.checks), "failed": list(self.failed)}

    def write(self, path: str | Path) -> None:
        atomic_write_bytes(Path(path), json.dumps(asdict(self), indent=2, sort_keys=True, default=str).encode())


def _suite_expectations(gxe, config: ValidationConfig) -> list:
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["shard", "offset"]),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "source", "subset", "split", "shard", "checksum", "shard_sha256")],
        gxe.ExpectColumnValuesToBeBetween(column="n_captions", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=config.min_frames, max_value=config.max_frames),
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(config.allowed_sources)),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToMatchRegex(column="checksum", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnMeanToBeBetween(column="is_train", min_value=config.train_fraction_range[0], max_value=config.train_fraction_range[1]),
    ]
    if config.required_splits:
        expectations.append(gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(config.required_splits)))
    if config.frame_checks:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="feature_dim", value_set=[FEATURE_DIM]))
        expectations.append(gxe.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0))
    for column, (low, high) in config.stat_ranges:
        # pandas counts NaN as null, so "not null" is the NaN check and "between" the range (and inf) check.
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        expectations.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
    return expectations


def _expectation_name(config_dict: dict) -> str:
    kwargs = config_dict.get("kwargs", {})
    target = kwargs.get("column") or ",".join(kwargs.get("column_list", []) or [])
    return f"{config_dict['type']}({target})" if target else config_dict["type"]


def validate_dataframe(frame, config: ValidationConfig = ValidationConfig(), manifest_path: str = "") -> ValidationResult:
    """Run the suite on a manifest data frame (pandas)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    frame = frame.copy()
    frame["n_captions"] = frame["motion_text"].map(lambda texts: 0 if texts is None else sum(bool(str(t).strip()) for t in texts)) + frame[
        "video_text"
    ].map(lambda text: int(bool(text and str(text).strip())))
    frame["is_train"] = (frame["split"] == "train").astype(float)
    for column, _ in config.stat_ranges:
        frame[column] = frame[column].astype(float)

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # batch logs, not per-metric bars
    batch_definition = (
        context.data_sources.add_pandas("manifest").add_dataframe_asset("manifest").add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="vimogen_manifest"))
    for expectation in _suite_expectations(gxe, config):
        suite.add_expectation(expectation)
    validation = context.validation_definitions.add(gx.ValidationDefinition(name="vimogen_manifest", data=batch_definition, suite=suite))
    outcome = validation.run(batch_parameters={"dataframe": frame})

    checks = []
    for item in outcome.results:
        config_dict = item.expectation_config.to_json_dict()
        result = item.result or {}
        checks.append(
            {
                "name": _expectation_name(config_dict),
                "success": bool(item.success),
                "observed_value": result.get("observed_value"),
                "unexpected_count": result.get("unexpected_count"),
                "partial_unexpected_list": (result.get("partial_unexpected_list") or [])[:5],
            }
        )
    failed = [check["name"] for check in checks if not check["success"]]
    return ValidationResult(manifest_path=manifest_path, success=not failed, n_rows=len(frame), failed=failed, checks=checks)


def frame_statistics(manifest_path: Path, frame) -> tuple[list[int], list[int]]:
    """Per manifest row: the feature width of its shard and the non-finite values in its frames
    (-1 and 0 where the shard cannot be read as a float array: the width check fails for it)."""
    import numpy as np

    widths, nonfinite, arrays = [], [], {}
    for shard, offset, n_frames in zip(frame["shard"], frame["offset"], frame["n_frames"]):
        if shard not in arrays:
            try:
                arrays[shard] = np.load(manifest_path.parent / shard, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                arrays[shard] = None
        array = arrays[shard]
        if array is None or array.ndim != 2:
            widths.append(-1)
            nonfinite.append(0)
            continue
        widths.append(int(array.shape[1]))
        nonfinite.append(int((~np.isfinite(array[offset: offset + n_frames])).sum()))
    return widths, nonfinite


def validate_manifest(manifest_path: str | Path, config: ValidationConfig = ValidationConfig(), report_path: str | Path | None = None) -> ValidationResult:
    """Validate a shard manifest; optionally write the JSON report (also when it fails)."""
    frame = read_manifest(Path(manifest_path)).to_pandas()
    if config.frame_checks:
        frame["feature_dim"], frame["n_nonfinite"] = frame_statistics(Path(manifest_path), frame)
    result = validate_dataframe(frame, config, manifest_path=str(manifest_path))
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        result.write(report_path)
    return result
