"""The model as MLflow serves it: prompts (+ frame counts, optional reference motions, seed) in,
joints and features out. Loading goes through the library's generator, so serving and the CLI agree."""
from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd


def model_signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([
        ColSpec("string", "prompt"),
        ColSpec("long", "frames", required=False),
        ColSpec("long", "seed", required=False),
        ColSpec("string", "ref_motion", required=False),  # JSON list of (T, 276) feature rows
    ])
    outputs = Schema([ColSpec("string", "prompt"), ColSpec("long", "frames"), ColSpec("string", "joints"),
                      ColSpec("string", "features")])
    return ModelSignature(inputs=inputs, outputs=outputs)


class VimogenPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from vimogen_core.train.generate import load_generator

        self.generator = load_generator(context.artifacts["checkpoint"])
        settings = json.loads(open(context.artifacts["settings"]).read())
        self.steps = int(settings.get("steps", 50))
        self.cfg_scale = float(settings.get("cfg_scale", 5.0))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        from vimogen_core.motion.representation import features_to_joints
        import torch

        if "prompt" not in model_input:
            raise ValueError("input needs a 'prompt' column")
        prompts = [str(p) for p in model_input["prompt"]]
        frames = [int(f) for f in model_input["frames"]] if "frames" in model_input else [100] * len(prompts)
        seed = int(model_input["seed"].iloc[0]) if "seed" in model_input and len(model_input) else 0
        refs = None
        if "ref_motion" in model_input:
            refs = [None if not isinstance(r, str) or not r else np.asarray(json.loads(r), dtype=np.float32)
                    for r in model_input["ref_motion"]]
        feats = self.generator.generate(prompts, frames, ref_motions=refs, steps=self.steps,
                                        cfg_scale=self.cfg_scale, seed=seed)
        rows = []
        for prompt, f in zip(prompts, feats):
            joints = features_to_joints(torch.as_tensor(f)).numpy()
            rows.append({"prompt": prompt, "frames": len(f), "joints": json.dumps(np.round(joints, 5).tolist()),
                         "features": json.dumps(np.round(f, 5).tolist())})
        return pd.DataFrame(rows)
