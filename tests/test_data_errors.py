"""Bad data and bugs are told apart: a take with bad data is quarantined with its reason and the run
goes on, while a programming error fails the curation (library and Dagster asset) instead of
quarantining every take. A torch file that would need unpickling code is refused, naming the file,
without torch's advice to load it unsafely."""
from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from dagster import DagsterInstance, materialize

from orchestration import assets
from orchestration.resources import ProjectPaths
from vimogen_core.bench.priors import DistanceFieldPrior
from vimogen_core.curation import pipeline, take
from vimogen_core.sources.raw_takes import SourcesConfig, build_sources, write_npz
from vimogen_core.curation.shards import MANIFEST_NAME
from vimogen_core.curation.source_index import SourceIndex
from vimogen_core.errors import MotionDataError
from vimogen_core.model.dit import read_state_dict
from vimogen_core.sources.deepmimic import load_builtin_clip
from vimogen_core.sources.vimogen228k import load_vimogen_motion
from vimogen_core.train.checkpoint import load_checkpoint


@pytest.fixture()
def sources_dir(tmp_path):
    """Optical-mocap takes of two built-in clips; the punch take's file then holds a single frame,
    a well-formed archive whose motion is too short to have velocities."""
    folder = tmp_path / "sources"
    build_sources(folder, SourcesConfig(clips=("walk", "punch")), sources=("optical_mocap",))
    punch = load_builtin_clip("punch").motion
    write_npz(folder / "optical_mocap" / "punch.npz", {"local_rotmats": punch.local_rotmats[:1].numpy(),
                                                       "joints": punch.joints[:1].numpy(), "fps": np.float64(punch.fps)})
    return folder


def plant_type_error(monkeypatch):
    def broken_clean_captions(captions):
        raise TypeError("planted bug")

    monkeypatch.setattr(take, "clean_captions", broken_clean_captions)  # called inside curate_take


def test_bad_take_is_quarantined_with_its_reason_and_the_rest_goes_on(sources_dir, tmp_path):
    result = pipeline.curate_samples(SourceIndex(str(sources_dir)), tmp_path / "curated")
    quarantine = {row["id"]: row for row in pq.read_table(result.quarantine_path).to_pylist()}
    short = quarantine["deepmimic/punch"]
    assert short["gates"] == ["data"]
    assert "punch.npz" in short["reasons"][0] and "1 frame" in short["reasons"][0]
    assert result.by_source == {"optical_mocap": 2}  # the walk take and its mirror


def test_programming_error_in_curate_take_fails_the_curation(sources_dir, tmp_path, monkeypatch):
    plant_type_error(monkeypatch)
    with pytest.raises(TypeError, match="planted bug"):
        pipeline.curate_samples(SourceIndex(str(sources_dir)), tmp_path / "curated")
    assert not (tmp_path / "curated" / MANIFEST_NAME).exists(), "a failed run leaves no manifest"


def test_programming_error_in_curate_take_fails_the_curated_samples_asset(sources_dir, tmp_path, monkeypatch):
    paths = ProjectPaths(state_dir=str(tmp_path / "state"))
    paths.sources.parent.mkdir(parents=True, exist_ok=True)
    sources_dir.rename(paths.sources)
    plant_type_error(monkeypatch)
    with DagsterInstance.ephemeral() as instance:
        result = materialize([assets.curated_samples], resources={"paths": paths}, instance=instance,
                             raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "planted bug" in failure.step_failure_data.error.to_string()
    assert not result.get_asset_materialization_events()


class _RunsCode:
    """Unpickling this runs a shell command - what a hostile checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("load", [load_checkpoint, load_vimogen_motion, DistanceFieldPrior.load, read_state_dict],
                         ids=["training checkpoint", "released motion", "distance-field prior", "released weights"])
def test_pickled_code_is_refused_naming_the_file_without_unsafe_advice(load, tmp_path):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "walk_motion.pt"
    walk = load_builtin_clip("walk").motion.joints.float()
    torch.save({"motion": walk, "model": {"layers.0.weight": walk}, "extra": _RunsCode(marker)}, hostile)
    with pytest.raises(MotionDataError) as err:
        load(hostile)
    message = str(err.value)
    assert message.startswith(f"{hostile}: refused to load: reading it would need unpickling arbitrary Python objects")
    assert "(it asks for posix.system)" in message  # what the file wanted to run
    assert "weights_only" not in message and "likely succeed" not in message
    assert not marker.exists()
