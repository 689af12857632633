"""The model as MLflow serves it: prompts (+ frame counts, optional reference motions, seed) in,
joints and features out. Loading goes through the library's generator, so serving and the CLI agree."""
from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd

from vimogen_core.control.files import CONTROL_COLUMNS
from vimogen_core.control.timeline import generate_any_length

DEFAULT_FRAMES = 100


def model_signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([
        ColSpec("string", "prompt"),
        ColSpec("long", "frames", required=False),
        ColSpec("long", "seed", required=False),
        ColSpec("string", "ref_motion", required=False),  # JSON list of (T, 276) feature rows
        # Motion control, JSON texts as README "Motion control" documents them.
        *[ColSpec("string", name, required=False) for name in CONTROL_COLUMNS],
    ])
    outputs = Schema([ColSpec("string", "prompt"), ColSpec("long", "frames"), ColSpec("string", "joints"),
                      ColSpec("string", "features")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def bad_request(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # the scoring server answers 400


def _column(frame: pd.DataFrame, name: str, default) -> list:
    if name not in frame:
        return [default] * len(frame)
    return [default if value is None or (isinstance(value, float) and np.isnan(value)) else value
            for value in frame[name]]


class VimogenPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from vimogen_core.train.generate import load_generator

        self.generator = load_generator(context.artifacts["checkpoint"])
        with open(context.artifacts["settings"]) as handle:
            settings = json.load(handle)
        # Either kind of checkpoint: a ViMoGen-light one samples in its own few steps, guidance built in.
        self.steps = int(settings.get("steps") or self.generator.default_steps)
        self.cfg_scale = None if self.generator.is_light else settings.get("cfg_scale")  # None: the preset's guidance

    def predict(self, context, model_input: pd.DataFrame, params=None):
        import torch

        from vimogen_core.errors import MotionDataError
        from vimogen_core.motion.representation import features_to_joints

        if "prompt" not in model_input:
            raise bad_request("input needs a 'prompt' column (one text per motion)")
        prompts = [str(p) for p in model_input["prompt"]]
        frames = [int(f) for f in _column(model_input, "frames", DEFAULT_FRAMES)]
        seed = int(_column(model_input, "seed", 0)[0]) if len(model_input) else 0
        try:
            refs = [np.asarray(json.loads(r), dtype=np.float32) if isinstance(r, str) and r else None
                    for r in _column(model_input, "ref_motion", None)]
            controls = [{name: _column(model_input, name, None)[i] for name in CONTROL_COLUMNS}
                        for i in range(len(model_input))]
            if any(value is not None for row in controls for value in row.values()):
                feats = self._controlled(prompts, frames, refs, controls, seed)
            else:
                feats = generate_any_length(self.generator, prompts, frames,
                                            ref_motions=refs if any(r is not None for r in refs) else None,
                                            steps=self.steps, cfg_scale=self.cfg_scale, seed=seed)
        except (ValueError, MotionDataError) as err:  # json errors are ValueErrors too
            raise bad_request(str(err)) from err
        rows = []
        for prompt, f in zip(prompts, feats):
            joints = features_to_joints(torch.as_tensor(f)).numpy()  # (T, 22, 3)
            rows.append({"prompt": prompt, "frames": len(f), "joints": json.dumps(np.round(joints, 5).tolist()),
                         "features": json.dumps(np.round(f, 5).tolist())})
        return pd.DataFrame(rows)

    def _controlled(self, prompts, frames, refs, controls, seed) -> list[np.ndarray]:
        """Rows with control columns, one at a time (each its own constraints), seeds as in a batch."""
        from vimogen_core.control.constraints import combine
        from vimogen_core.control.files import constraints_from_columns
        from vimogen_core.control.sampling import generate_controlled
        from vimogen_core.control.timeline import generate_timeline

        requests = []
        for i, row in enumerate(controls):  # every row checked before any sampling
            constraints, segments = constraints_from_columns(row, f"row {i}")
            if (constraints or segments) and refs[i] is not None:
                raise ValueError(f"row {i}: motion control is text mode; drop ref_motion")
            requests.append((constraints and combine(constraints, frames[i]), segments))
        out = []
        for i, (targets, segments) in enumerate(requests):
            if segments:
                out.append(generate_timeline(self.generator, segments, steps=self.steps, cfg_scale=self.cfg_scale,
                                             seed=seed + i))
            elif targets:
                out.append(generate_controlled(self.generator, [prompts[i]], [targets], steps=self.steps,
                                               cfg_scale=self.cfg_scale, seed=seed + i)[0])
            else:
                out.extend(generate_any_length(self.generator, [prompts[i]], [frames[i]],
                                               ref_motions=[refs[i]] if refs[i] is not None else None,
                                               steps=self.steps, cfg_scale=self.cfg_scale, seed=seed + i))
        return out
