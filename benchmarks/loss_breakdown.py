"""Where a checkpoint's denoiser is wrong: the mean squared error of its clean-motion estimate
(normalised units, so 1.0 is what predicting the data mean scores) per flow time and per feature
group (pose, positions, velocities, root), on fixed training draws, text mode, conditional. Prints JSON.

    .venv/bin/python benchmarks/loss_breakdown.py --checkpoint RUN/checkpoints/step_X.pt [--samples 64] [--raw-weights]
"""
from __future__ import annotations

import argparse
import json

import torch

from vimogen_core.model.flow import FlowMatching, as_velocity
from vimogen_core.motion.representation import JOINT_POS, JOINT_VEL, POSE6D, ROOT_ROT6D, ROOT_VEL
from vimogen_core.train.batches import collate
from vimogen_core.train.data import build_dataset, draw_sample
from vimogen_core.train.generate import load_generator

GROUPS = {"pose": POSE6D, "positions": JOINT_POS, "velocities": JOINT_VEL, "root": slice(ROOT_ROT6D.start, ROOT_VEL.stop)}
TIMES = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98)


@torch.no_grad()
def breakdown(checkpoint: str, samples: int, use_ema: bool) -> dict:
    generator = load_generator(checkpoint, use_ema=use_ema)
    config = generator.train_config.replace(text_drop=0.0, p_text=1.0, p_text_noisy=1.0)
    dataset = build_dataset(config, generator.normalizer)
    batch = collate([draw_sample(dataset, config, 10_000_000 + i) for i in range(samples)])
    context, context_mask = generator.text.encode(batch.captions)
    noise = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(0)) * batch.x_mask[..., None]
    mask = batch.x_mask[..., None].float()
    rows = {}
    for s_value in TIMES:
        s = torch.full((samples,), s_value)
        x_t = FlowMatching.interpolate(batch.x0, noise, s)
        out = generator.model(x_t, FlowMatching.timestep_for_model(s), context, batch.x_mask, batch.reference,
                              batch.reference_mask, batch.use_text, context_mask)
        x0_hat = x_t - s[:, None, None] * as_velocity(out, x_t, s, generator.model_config.prediction)
        err = (x0_hat - batch.x0).pow(2) * mask  # (B, T, 276)
        rows[str(s_value)] = {name: round(float(err[..., dims].sum() / (mask.sum() * (dims.stop - dims.start))), 4)
                              for name, dims in GROUPS.items()}
    return {"ema": use_ema, "step": generator.step, "x0_mse_by_time": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--raw-weights", action="store_true", help="also the raw (non-EMA) weights")
    args = parser.parse_args()
    results = [breakdown(args.checkpoint, args.samples, True)]
    if args.raw_weights:
        results.append(breakdown(args.checkpoint, args.samples, False))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
