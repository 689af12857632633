"""The Great Expectations suite: passes on the real curated set, names each planted defect."""
from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from vimogen_core.cli import main as vimogen
from vimogen_core.curation.expectations import ValidationConfig, validate_dataframe, validate_manifest
from vimogen_core.curation.config import CurationConfig
from vimogen_core.curation.pipeline import curate_samples
from vimogen_core.curation.source_index import SourceIndex
from vimogen_core.sources.raw_takes import SourcesConfig, build_sources
from vimogen_core.curation.sharding import write_shards


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("gx")
    sources = build_sources(root / "sources", SourcesConfig(clips=("walk", "punch", "jump", "crawl", "getup_facedown", "roll"),
                                                            capture_presets=("clean", "gross_failure")))
    curated = curate_samples(SourceIndex(str(sources.out_dir)), root / "curated", CurationConfig(split_fractions=(0.6, 0.2, 0.2), split_salt="gx1"))
    assert set(curated.by_split) == {"train", "val", "test"}
    return write_shards(curated.manifest_path, root / "shards").manifest_path


def test_real_curated_set_passes(real_manifest):
    result = validate_manifest(real_manifest)
    assert result.success, result.failed
    assert result.n_rows > 10 and len(result.checks) > 20
    assert all(check["success"] for check in result.checks)


def test_planted_defects_fail_and_are_named(real_manifest):
    clean = pq.read_table(real_manifest).to_pandas()
    planted = clean.copy()
    planted.loc[1, "id"] = planted.loc[0, "id"]  # a duplicate id
    planted.loc[2, "stat_jitter"] = np.nan  # NaN statistic
    planted.loc[3, "stat_max_joint_speed"] = np.inf  # non-finite statistic
    planted.loc[4, "n_frames"] = 250  # too long
    planted.loc[5, "n_frames"] = 12  # too short
    planted.loc[6, "source"] = "webcam"  # unknown source
    planted.at[7, "motion_text"] = []
    planted.loc[7, "video_text"] = " "  # no caption at all
    result = validate_dataframe(planted, ValidationConfig())
    assert not result.success
    assert set(result.failed) == {
        "expect_column_values_to_be_unique(id)",
        "expect_column_values_to_not_be_null(stat_jitter)",
        "expect_column_values_to_be_between(stat_max_joint_speed)",
        "expect_column_values_to_be_between(n_frames)",
        "expect_column_values_to_be_in_set(source)",
        "expect_column_values_to_be_between(n_captions)",
    }
    by_name = {check["name"]: check for check in result.checks}
    assert by_name["expect_column_values_to_be_between(n_frames)"]["unexpected_count"] == 2


def test_split_proportions_are_checked(real_manifest):
    frame = pq.read_table(real_manifest).to_pandas()
    only_train = frame.assign(split="train")
    result = validate_dataframe(only_train, ValidationConfig())
    assert set(result.failed) == {"expect_column_distinct_values_to_contain_set(split)", "expect_column_mean_to_be_between(is_train)"}


def test_cli_validate_exit_code(real_manifest, tmp_path, capsys):
    assert vimogen(["data", "validate", "--manifest", str(real_manifest), "--report", str(tmp_path / "ok.json")]) == 0
    frame = pq.read_table(real_manifest).to_pandas()
    frame.loc[1, "id"] = frame.loc[0, "id"]
    bad = tmp_path / "manifest.parquet"
    frame.to_parquet(bad)
    assert vimogen(["data", "validate", "--manifest", str(bad), "--report", str(tmp_path / "bad.json")]) == 1
    assert "FAILED expect_column_values_to_be_unique(id)" in capsys.readouterr().err
    assert '"success": false' in (tmp_path / "bad.json").read_text()


def test_library_imports_without_great_expectations_or_boto3():
    import subprocess

    code = ("import sys; import vimogen_core.curation.expectations, vimogen_core.curation.storage, vimogen_core.curation.cli, "
            "vimogen_core.curation.pipeline, vimogen_core.curation.dataset; "
            "bad = [m for m in ('great_expectations', 'boto3', 'dvc', 'dagster', 'mlflow') if m in sys.modules]; print(bad); assert not bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
