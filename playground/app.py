"""The playground page: prompt, duration, steps and seed in; an orbitable animated 3D view (GLB with
the procedural body), a rendered video and BVH/GLB/NPZ downloads out.

Offline by construction: Gradio's analytics are off before it is imported, its fonts are the
bundled local ones, and the 3D view is the Babylon.js viewer bundled in the Gradio wheel (its
default environment ships as a local module), so the page loads nothing but 127.0.0.1.
Generation is the library's: `generate_any_length` (the call `vimogen generate` and the served
model make, with the same clean-up) and `export_features` for every file, so the page and the CLI agree.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported

import numpy as np

from vimogen_core.control.requests import RequestError, RequestLimits, check_prompt, check_seed, whole_number
from vimogen_core.errors import MotionDataError
from vimogen_core.motion.skeleton import FPS
from vimogen_core.train.generate import MAX_FRAMES, Generator

MAX_STEPS = 200
# Clicks waiting for the one generation slot; one more is refused by Gradio ("queue is full")
# instead of the page's memory growing with every waiting visitor.
QUEUE_SIZE = 16
DOWNLOADS = ("glb", "bvh", "npz")
# The viewer's orbit camera (degrees about glTF's Y up, then from the pole): a front three-quarter
# view, since a motion starts facing +Y in the project's frame, -Z in glTF's.
CAMERA_ORBIT = (-60, 75, None)  # None: the viewer picks the distance that frames the whole motion
EXAMPLES = ["a person walks forward", "a person jumps up and down", "a person does a cartwheel"]


@dataclass
class LoadedModel:
    generator: Generator
    steps: int  # the default Euler step count shown in the page
    source: str  # what was loaded, for the page header


def load_model(model: str | None = None, checkpoint: str | None = None) -> LoadedModel:
    """A checkpoint file, or an MLflow model URI (`models:/vimogen@champion`) loaded through its
    pyfunc wrapper, so the page runs what `mlflow models serve` would: same weights, same steps."""
    from vimogen_core.train.generate import load_generator

    if checkpoint:
        generator = load_generator(checkpoint)
        # `vimogen generate`'s default (50; 4 for a ViMoGen-light student); a registered model
        # brings its own serving steps
        return LoadedModel(generator, generator.default_steps, f"checkpoint {checkpoint} (step {generator.step})")
    from orchestration.model_server import load_pyfunc

    served = load_pyfunc(model).unwrap_python_model()
    return LoadedModel(served.generator, served.steps, f"{model} (step {served.generator.step})")


def check_request(prompt: str, duration: float, steps, seed,
                  limits: RequestLimits = RequestLimits()) -> tuple[str, int, int, int]:
    """The page's inputs -> (prompt, frames, steps, seed), or RequestError (a ValueError) with what to
    change; the served model's limits (vimogen_core.control.requests) apply to the prompt and seed."""
    prompt = check_prompt(prompt, "prompt", limits)
    if isinstance(duration, bool) or not isinstance(duration, (int, float, np.integer, np.floating)) or not math.isfinite(float(duration)):
        raise RequestError(f"duration must be a number of seconds, got {duration!r}"[:120])
    seconds = float(duration)
    frames = int(round(seconds * FPS)) if abs(seconds) <= 2 * MAX_FRAMES / FPS else -1  # no overflow on 1e308
    if not 2 <= frames <= MAX_FRAMES:
        raise RequestError(f"duration must be between {2 / FPS:.1f} and {MAX_FRAMES / FPS:.0f} s, got {duration} s")
    return prompt, frames, whole_number(steps, "steps", 1, MAX_STEPS), check_seed(seed)


def generate_files(loaded: LoadedModel, prompt: str, frames: int, steps: int, seed: int, out_dir: Path,
                   report=lambda fraction, message: None) -> dict[str, Path]:
    """Generate one motion and write its downloads; returns {"features", "glb", "bvh", "npz"}."""
    from vimogen_core.body.procedural import build_procedural_smpl
    from vimogen_core.motion.export import export_features

    from vimogen_core.control.timeline import OVERLAP_FRAMES, generate_any_length, trained_window, windows

    generator = loaded.generator
    # As `vimogen generate` and the served model: a motion longer than the checkpoint does well in one
    # window is continued window by window; each window is `steps` guided Euler steps, each step one
    # forward of the network (ClassifierFreeGuidance.wrap), which a hook counts for the progress bar.
    window = trained_window(generator)
    n_windows = len(windows([frames], window, OVERLAP_FRAMES)) if frames > window else 1
    done = 0

    def after_forward(module, inputs, output):
        nonlocal done
        done += 1
        where = f", window {min((done - 1) // steps + 1, n_windows)} of {n_windows}" if n_windows > 1 else ""
        report(0.05 + 0.75 * min(done / (steps * n_windows), 1.0), f"step {(done - 1) % steps + 1} of {steps}{where}")

    report(0.05, f"sampling {frames} frames with {steps} steps")
    hook = generator.model.register_forward_hook(after_forward)
    try:
        feats = generate_any_length(generator, [prompt], [frames], steps=steps, seed=seed)[0]
    finally:
        hook.remove()
    report(0.8, "writing GLB, BVH and NPZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"features": out_dir / "motion.features.npy"}
    np.save(paths["features"], feats)
    for fmt in DOWNLOADS:
        paths[fmt] = out_dir / f"motion.{fmt}"
        export_features(feats, fmt, str(paths[fmt]), body=build_procedural_smpl)
    return paths


def render_video(features_path: Path) -> Path:
    """The rendered MP4 beside the features (the same render as `vimogen motion export --to mp4`)."""
    from vimogen_core.motion.export import export_features

    out = features_path.with_name("motion.mp4")
    export_features(np.load(features_path), "mp4", str(out))
    return out


def answer_generate(loaded: LoadedModel, out_root: Path, prompt, duration, steps, seed,
                    report=lambda fraction, message: None) -> tuple:
    """The Generate button: (GLB, downloads, features, status). Inputs are checked before any model
    work; bad input is a line in the status, never a traceback."""
    started = time.perf_counter()
    try:
        prompt, frames, steps, seed = check_request(prompt, duration, steps, seed)
        out_dir = Path(tempfile.mkdtemp(prefix="motion-", dir=out_root))
        paths = generate_files(loaded, prompt, frames, steps, seed, out_dir, report=report)
    except (ValueError, MotionDataError) as err:
        return None, None, None, f"**Error:** {err}"
    seconds = time.perf_counter() - started
    status = (f"Generated **{frames} frames** ({frames / FPS:.1f} s at {FPS} fps) in {seconds:.2f} s: "
              f"\"{prompt}\", {steps} steps, seed {seed}. Rendering the video...")
    return str(paths["glb"]), [str(paths[fmt]) for fmt in DOWNLOADS], str(paths["features"]), status


def build_app(loaded: LoadedModel, out_root: Path):
    import gradio as gr

    def on_generate(prompt, duration, steps, seed, progress=gr.Progress()):
        return answer_generate(loaded, out_root, prompt, duration, steps, seed,
                               report=lambda fraction, message: progress(fraction, desc=message))

    def on_render(features_path, status):
        if not features_path:
            return None, status
        video = render_video(Path(features_path))
        return str(video), status.replace("Rendering the video...", "Video ready.")

    with gr.Blocks(title="ViMoGen playground", analytics_enabled=False) as app:
        gr.Markdown(f"# ViMoGen playground\nModel: `{loaded.source}`. Text in, 3D human motion out "
                    f"(20 fps, SMPL-22 skeleton); drag the 3D view to orbit it.")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", placeholder="a person walks forward", elem_id="prompt")
                # No minimum/maximum here: Gradio would refuse such values with its own pop-up before
                # the handler runs; `check_request` names the allowed range in the status line instead.
                duration = gr.Number(label=f"Duration (s, {2 / FPS:.1f} to {MAX_FRAMES / FPS:.0f})", value=5.0,
                                     elem_id="duration")
                steps = gr.Number(label=f"Steps (1 to {MAX_STEPS})", value=loaded.steps, elem_id="steps")
                seed = gr.Number(label="Seed", value=0, elem_id="seed")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                gr.Examples(EXAMPLES, inputs=[prompt])
                status = gr.Markdown("Enter a prompt and press Generate.", elem_id="status")
            with gr.Column(scale=2):
                view = gr.Model3D(label="Motion (GLB, orbit with the mouse)", clear_color=(0.95, 0.95, 0.97, 1.0),
                                  camera_position=CAMERA_ORBIT, height=480, elem_id="view")
                video = gr.Video(label="Rendered video", elem_id="video", autoplay=True, loop=True)
                files = gr.File(label="Downloads: GLB, BVH, NPZ", file_count="multiple", elem_id="downloads")
        features = gr.State()
        run.click(on_generate, [prompt, duration, steps, seed], [view, files, features, status]).then(
            on_render, [features, status], [video, status])
    return app


def launch(model: str | None, checkpoint: str | None, host: str = "127.0.0.1", port: int = 7860,
           out: str | None = None) -> None:
    """Load the model, then serve the page until interrupted."""
    from vimogen_core.state import state_dir

    out_root = Path(out) if out else state_dir() / "playground"
    out_root.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model, checkpoint)
    app = build_app(loaded, out_root)
    print(f"playground: {loaded.source} on http://{host}:{port} (files under {out_root})", flush=True)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE).launch(
        server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False, mcp_server=False,
        allowed_paths=[str(out_root)], footer_links=[], quiet=True)
