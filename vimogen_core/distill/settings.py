"""The settings of each ViMoGen-light step, from params.yaml and then from explicit values: the one
reader the CLI (`vimogen distill ... --params`), DVC (dvc.yaml runs the CLI) and the Dagster
assets share, so the three run a step with the same settings."""
from __future__ import annotations

import os
from typing import Any, Mapping

# step -> its params.yaml section
SECTIONS = {"prompts": "distill_prompts", "sample": "distill_sample", "train": "distill_train"}


def _default(step: str):
    if step == "prompts":
        from vimogen_core.distill.prompts import PromptSettings

        return PromptSettings()
    if step == "sample":
        from vimogen_core.distill.teacher import TeacherSamplingConfig

        return TeacherSamplingConfig()
    from vimogen_core.distill.student import StudentConfig

    return StudentConfig()


def distill_settings(step: str, params_path: str | os.PathLike | None = None,
                     given: Mapping[str, Any] | None = None, where: str = "command line"):
    """The config of `step` ("prompts", "sample", "train"): its defaults, the params file's section
    over them, then the `given` values that are not None (named `where` in errors)."""
    from vimogen_core.config_overrides import apply_overrides, read_params

    section = SECTIONS[step]
    config = apply_overrides(_default(step), read_params(params_path, section), f"{params_path}:{section}")
    return apply_overrides(config, {k: v for k, v in (given or {}).items() if v is not None}, where)
