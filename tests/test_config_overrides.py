"""One override implementation serves curation params, Dagster run config and training `--set`."""
from __future__ import annotations

import pytest

from vimogen_core.config_overrides import apply_overrides
from vimogen_core.curation.config import CURATION_PRESETS
from vimogen_core.train import config as train_config


def test_training_and_curation_overrides_are_the_same_function():
    # The wrapper in train.config adds only the `model.` prefix and the source name.
    trained = train_config.apply_overrides(train_config.get_train_preset("tiny"),
                                           ["steps=7", "bf16=off", "model.num_layers=3"])
    assert trained.steps == 7 and trained.bf16 is False and trained.model_overrides["num_layers"] == 3
    curated = apply_overrides(CURATION_PRESETS["default"], {"window_stride": 64, "gates": {}}, "params.yaml:curate")
    assert curated.window_stride == 64


def test_unknown_key_names_the_source_and_the_key():
    with pytest.raises(ValueError, match=r"params.yaml:curate: unknown setting 'windw'"):
        apply_overrides(CURATION_PRESETS["default"], {"windw": 3}, "params.yaml:curate")
    with pytest.raises(ValueError, match=r"--set: unknown training setting 'stepz'"):
        train_config.apply_overrides(train_config.get_train_preset("tiny"), ["stepz=3"])
    with pytest.raises(ValueError, match=r"--set expects key=value"):
        train_config.apply_overrides(train_config.get_train_preset("tiny"), ["steps"])
    with pytest.raises(ValueError, match=r"--set steps: expected int"):
        train_config.apply_overrides(train_config.get_train_preset("tiny"), ["steps=many"])
