"""Run under `torchrun --nproc_per_node 2` by tests/test_ddp.py: the same 20-step training with DDP
and with FSDP2, and the FSDP run once more stopped at step 10 and resumed from its sharded
checkpoint, each into its own folder under argv[1]; the test compares the checkpoints."""
from __future__ import annotations

import json
import sys

from vimogen_core.train.config import apply_overrides, get_train_preset
from vimogen_core.train.loop import train


def main() -> None:
    out, settings = sys.argv[1], json.loads(sys.argv[2])
    config = apply_overrides(get_train_preset("tiny"), settings)
    train(config.replace(parallel="ddp"), f"{out}/ddp", progress=False)
    train(config.replace(parallel="fsdp"), f"{out}/fsdp", progress=False)
    half = config.replace(parallel="fsdp", checkpoint_every=config.steps // 2)
    train(half.replace(steps=config.steps // 2), f"{out}/fsdp_resumed", progress=False)
    train(half, f"{out}/fsdp_resumed", resume="auto", progress=False)


if __name__ == "__main__":
    main()
