"""The model as MLflow serves it: prompts (+ frame counts, optional reference motions, seed) in,
joints and features out. Loading goes through the library's generator, so serving and the CLI agree."""
from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd

from vimogen_core.control.files import CONTROL_COLUMNS
from vimogen_core.control.requests import Row
from vimogen_core.control.timeline import generate_any_length


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

    return MlflowException(" ".join(message.split()), error_code=INVALID_PARAMETER_VALUE)  # the scoring server answers 400


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
        """MLflow's entry: the rows are checked against the serving limits (vimogen_core.control.requests)
        before any model work; a refusal is MLflow's 400 with the one-line reason."""
        from vimogen_core.control.requests import RequestError, check_rows

        try:
            rows = check_rows(model_input.to_dict("records"))
        except RequestError as err:
            raise bad_request(str(err)) from None
        return self.generate_rows(rows)

    def generate_rows(self, rows: list[Row]) -> pd.DataFrame:
        """Checked rows -> one output row per motion. The request's seed is its first row's; motion i draws
        seed + i. `vimogen serve` calls this directly with the rows it has checked."""
        import torch

        from vimogen_core.errors import MotionDataError
        from vimogen_core.motion.representation import features_to_joints

        prompts, frames, refs = [r.prompt for r in rows], [r.frames for r in rows], [r.ref_motion for r in rows]
        seed = rows[0].seed
        try:
            if any(row.controls for row in rows):
                feats = self._controlled(prompts, frames, refs, [row.controls for row in rows], seed)
            else:
                feats = generate_any_length(self.generator, prompts, frames,
                                            ref_motions=refs if any(r is not None for r in refs) else None,
                                            steps=self.steps, cfg_scale=self.cfg_scale, seed=seed)
        except (ValueError, MotionDataError) as err:  # what only the generator can tell (e.g. ref mode on a light model)
            raise bad_request(str(err)) from err
        out = []
        for prompt, f in zip(prompts, feats):
            joints = features_to_joints(torch.as_tensor(f)).numpy()  # (T, 22, 3)
            # rounded in float64: float32 values would print as 0.8799899816513062 (2.5x the text)
            out.append({"prompt": prompt, "frames": len(f),
                        "joints": json.dumps(np.round(joints.astype(np.float64), 5).tolist()),
                        "features": json.dumps(np.round(f.astype(np.float64), 5).tolist())})
        return pd.DataFrame(out)

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
