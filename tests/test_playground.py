"""The playground: a real server process on 127.0.0.1 driven in Debian's headless Chromium (the
page shows the generated motion: the GLB it loads has the requested frame count; bad input is a
message in the page; nothing outside 127.0.0.1 is requested), stopped by its PID; and a model
loads from the MLflow registry the way the page's default does."""
from __future__ import annotations

import io
import shutil
import socket

import numpy as np
import pytest
from pygltflib import GLTF2

from playground.app import check_request

FAST = ["batch_size=4", "bf16=false", "steps=2", "warmup_steps=1", "checkpoint_every=2",
        "model.dim=64", "model.ffn_dim=128", "model.num_heads=4", "model.num_layers=2"]
needs_browser = pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                                   reason="needs Debian chromium and chromium-driver (make system-deps)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vimogen_core.train.config import apply_overrides, get_train_preset
    from vimogen_core.train.loop import train

    return train(apply_overrides(get_train_preset("tiny"), FAST), tmp_path_factory.mktemp("run"),
                 progress=False).checkpoint


def test_bad_requests_are_named():
    assert check_request("  a person waves ", 2.5, 10, 3) == ("a person waves", 50, 10, 3)
    for args, message in ((("", 3, 10, 0), "prompt is empty"), (("walk", 0, 10, 0), "duration must be between"),
                          (("walk", float("nan"), 10, 0), "duration must be a number"),
                          (("walk", 3, 0, 0), "steps must be between"), (("walk", 3, 2.5, 0), "steps must be a whole"),
                          (("walk", 3, 10, -1), "seed must be between")):
        with pytest.raises(ValueError, match=message):
            check_request(*args)


def _body_pixels(png: bytes) -> np.ndarray:
    """The 3D view's pixels of the body's blue-grey (the background is near-neutral grey), as a mask."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return rgb[..., 2] - rgb[..., 0] > 20


def _glb_frames(data: bytes) -> int:
    gltf = GLTF2.load_from_bytes(data)
    return gltf.accessors[gltf.animations[0].samplers[0].input].count


@pytest.mark.slow
@needs_browser
def test_page_generates_the_motion_and_names_bad_input(checkpoint, tmp_path):
    from playground.browser import LOCAL_PREFIXES, Page, chromium, free_port, start_server, stop_server

    port = free_port()
    server = start_server(["--checkpoint", str(checkpoint)], port, tmp_path / "out",
                          env={"VIMOGEN_STATE_DIR": str(tmp_path / "state")}, log=tmp_path / "server.log")
    driver = None
    try:
        driver = chromium()
        page = Page(driver, port)
        page.fill("a person walks forward", 2.5, 4, 3)
        page.generate("seed 3.")
        assert "Generated 50 frames" in page.status
        page.wait_for(lambda: "Video ready" in page.status, 300)
        def glbs():
            return [url for url in page.network() if url.split("?")[0].endswith(".glb")]

        page.wait_for(glbs, 60)  # the 3D view fetches the motion once its viewer is up
        assert len(glbs()) == 1, glbs()
        assert _glb_frames(page.fetch(glbs()[0])) == 50
        downloads = [a.get_attribute("href") for a in driver.find_elements("css selector", "#downloads a")]
        assert sorted(url.rsplit(".", 1)[-1] for url in downloads if url) == ["bvh", "glb", "npz"]
        with np.load(io.BytesIO(page.fetch(next(u for u in downloads if u.endswith(".npz"))))) as npz:
            assert npz["poses"].shape == (50, 72)
        assert driver.execute_script("return document.querySelector('#video video').src").endswith(".mp4")
        canvas = driver.find_element("css selector", "#view canvas")
        page.wait_for(lambda: _body_pixels(canvas.screenshot_as_png).sum() > 2000, 60)  # the body is drawn
        first = _body_pixels(canvas.screenshot_as_png)
        page.wait_for(lambda: not np.array_equal(first, _body_pixels(canvas.screenshot_as_png)), 30)  # and moves
        driver.save_screenshot(str(tmp_path / "playground.png"))  # looked at by hand

        page.fill("", 2.5, 4, 3)
        page.generate("Error", timeout=60)
        assert "prompt is empty" in page.status
        page.fill("a person jumps", 0, 4, 3)
        page.generate("Error", timeout=60)
        assert "duration must be between" in page.status
        assert "Traceback" not in driver.page_source
        outside = [url for url in page.network() if not url.startswith(LOCAL_PREFIXES)]
        assert outside == [], outside  # offline: no CDN, no telemetry
    finally:
        if driver is not None:
            driver.quit()
        assert stop_server(server) is not None
    with pytest.raises(ConnectionRefusedError):  # the server is gone
        socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.slow
def test_registry_champion_loads_with_its_serving_steps(checkpoint, tmp_path, monkeypatch):
    from orchestration.registry import register_candidate
    from orchestration.resources import MLflowTracking, ProjectPaths
    from playground.app import generate_files, load_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow = MLflowTracking(tracking_uri=uri).setup(ProjectPaths(state_dir=str(tmp_path)))
    with mlflow.start_run() as run:
        pass
    version = register_candidate(mlflow, "vimogen", {"run_id": run.info.run_id, "checkpoint": str(checkpoint),
                                                     "run_dir": str(checkpoint.parent.parent)})
    mlflow.tracking.MlflowClient().set_registered_model_alias("vimogen", "champion", version.version)

    loaded = load_model("models:/vimogen@champion")
    assert loaded.steps == 20 and loaded.generator.step == 2 and "models:/vimogen@champion" in loaded.source
    reports = []
    paths = generate_files(loaded, "a person waves", 12, 3, 0, tmp_path / "out",
                           report=lambda fraction, message: reports.append((fraction, message)))
    assert [m for _, m in reports if m.startswith("step")] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert [f for f, _ in reports] == sorted(f for f, _ in reports)  # the bar only moves forward
    assert np.load(paths["features"]).shape == (12, 276) and all(paths[fmt].is_file() for fmt in ("glb", "bvh", "npz"))
    with pytest.raises(ValueError, match="models:/vimogen@nosuchalias"):
        load_model("models:/vimogen@nosuchalias")
