"""What generating from the playground page costs over the CLI with the same settings; prints JSON.

Side by side in one run, alternating, so both see the same machine load:
- cli: the library calls `vimogen generate` makes once its model is loaded (`generate_any_length`,
  then the GLB/BVH/NPZ exports the page also writes), in this process;
- page: a real `vimogen playground` process driven in headless Chromium, from the click on
  Generate until the status line says the motion is there (the 3D view then fetches the GLB; the
  video follows in a second step and is timed separately).
Also the whole `vimogen generate` command once (process start and model load included), for scale.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/playground_latency.py --checkpoint CKPT [--frames 100 --steps 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--prompt", default="a person walks forward")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from playground.app import DOWNLOADS, load_model
    from playground.browser import Page, chromium, free_port, start_server, stop_server
    from vimogen_core.body.procedural import build_procedural_smpl
    from vimogen_core.control.timeline import generate_any_length
    from vimogen_core.motion.export import export_features
    from vimogen_core.motion.skeleton import FPS

    work = Path(tempfile.mkdtemp(prefix="playground_latency_"))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vimogen_core.cli", "generate", args.prompt, "--frames", str(args.frames),
                    "--steps", str(args.steps), "--seed", str(args.seed), "--checkpoint", args.checkpoint,
                    "--out", str(work / "cli"), "--export", "bvh,npz"], check=True, capture_output=True)
    cli_command = time.perf_counter() - started

    generator = load_model(checkpoint=args.checkpoint).generator

    def cli_once() -> float:
        begin = time.perf_counter()
        feats = generate_any_length(generator, [args.prompt], [args.frames], steps=args.steps, seed=args.seed)[0]
        for fmt in DOWNLOADS:
            export_features(feats, fmt, str(work / f"cli.{fmt}"), body=build_procedural_smpl)
        return time.perf_counter() - begin

    port = free_port()
    server = start_server(["--checkpoint", args.checkpoint], port, work / "page", log=work / "server.log")
    driver = chromium()
    runs = []
    try:
        page = Page(driver, port)
        page.fill(args.prompt, args.frames / FPS, args.steps, args.seed)
        cli_once()  # warm-up on both sides: first calls build caches (text encoder, allocator)
        page.generate("Video ready")
        for _ in range(args.repeats):
            cli = cli_once()
            clicked = time.perf_counter()
            shown = page.generate("Rendering the video")
            if "Error:" in page.status:
                raise RuntimeError(page.status)
            page.wait_for(lambda: "Video ready" in page.status, 300)
            runs.append({"cli_s": round(cli, 3), "page_s": round(shown, 3),
                         "page_with_video_s": round(time.perf_counter() - clicked, 3)})
    finally:
        driver.quit()
        stop_server(server)
    cli_median = statistics.median(r["cli_s"] for r in runs)
    page_median = statistics.median(r["page_s"] for r in runs)
    print(json.dumps({
        "settings": {"prompt": args.prompt, "frames": args.frames, "steps": args.steps, "seed": args.seed,
                     "checkpoint": args.checkpoint, "repeats": args.repeats},
        "cli_generate_median_s": round(cli_median, 3),
        "page_median_s": round(page_median, 3),
        "page_overhead_median_s": round(page_median - cli_median, 3),
        "within_1s": page_median - cli_median <= 1.0,
        "page_with_video_median_s": round(statistics.median(r["page_with_video_s"] for r in runs), 3),
        "cli_command_s": round(cli_command, 3),
        "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
