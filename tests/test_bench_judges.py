"""MBench judges: answer parsing, the VLM judge against a local HTTP server, the calibrated local judge."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from vimogen_core.bench import vlm
from vimogen_core.bench.judges import calibrate_threshold, ten_way_accuracy
from vimogen_core.sources.deepmimic import load_builtin_clip

LABELS = ["playing piano", "swimming", "falling off bike", "repairing puncture", "brush painting",
          "checking watch", "tossing coin", "playing flute", "playing violin", "violin"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("C", 2), ("(C)", 2), ("Answer: C", 2), ("The answer is c.", 2), ("**B**", 1), ("B. swimming", 1),
        ("3", 2), ("Option 10", 9), ("I think the person is playing violin.", 8),
        ("A person playing the flute... so: playing flute", 7), ("I cannot tell from this video", None),
        ("K", None), ("11", None), ("", None),
    ],
)
def test_choice_answers_are_parsed_from_letters_numbers_and_labels(answer, expected):
    assert vlm.parse_choice(answer, LABELS) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("Yes.", True), ("yes, it matches", True), ("No", False), ("**No.** The person walks.", False),
     ("The answer is no; it is a jump", False), ("Not sure", None), ("", None)],
)
def test_yes_no_answers_are_parsed(answer, expected):
    assert vlm.parse_yes_no(answer) is expected


def test_threshold_calibration_separates_matched_from_mismatched_pairs():
    threshold, balanced = calibrate_threshold([0.8, 0.7, 0.9], [0.1, 0.3, 0.2, 0.5])
    assert balanced == 1.0 and 0.5 < threshold < 0.7
    threshold, balanced = calibrate_threshold([0.8, 0.4], [0.1, 0.6])  # overlapping: best is 3 of 4 right
    assert balanced == pytest.approx(0.75)


def test_ten_way_accuracy_is_one_for_a_perfect_similarity_and_chance_for_noise():
    assert ten_way_accuracy(np.eye(15) + 0.01)[0] == 1.0
    noise = np.random.default_rng(0).normal(size=(200, 200))
    assert ten_way_accuracy(noise, trials_per_motion=5)[0] == pytest.approx(0.1, abs=0.04)


# --- VLM judge against a local server that answers like the APIs ---------------------------------


class ScriptedAPI:
    """HTTP server on 127.0.0.1 replaying (status, body) responses and recording the requests."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers["Content-Length"])
                api.requests.append({"path": self.path, "headers": dict(self.headers),
                                     "json": json.loads(self.rfile.read(length))})
                status, body = api.responses.pop(0)
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def gemini_reply(text: str) -> tuple[int, dict]:
    return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]}


def openai_reply(text: str) -> tuple[int, dict]:
    return 200, {"id": "chatcmpl-1", "object": "chat.completion",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def walk_joints() -> np.ndarray:
    return load_builtin_clip("walk").motion.joints.numpy()


def make_judge(api: ScriptedAPI, provider: str, sleeps: list) -> vlm.VLMJudge:
    config = vlm.VLMConfig(provider=provider, base_url=api.url, model="test-model", api_key="k-123", backoff_s=0.5)
    return vlm.VLMJudge(config, sleep=sleeps.append)


def test_gemini_judge_retries_a_server_error_and_sends_the_rendered_video(walk_joints):
    sleeps = []
    with ScriptedAPI([(500, {"error": {"code": 500, "message": "internal"}}), gemini_reply("The answer is B.")]) as api:
        judge = make_judge(api, "gemini", sleeps)
        assert judge.choose(walk_joints, LABELS) == 1
    assert len(api.requests) == 2 and sleeps == [0.5]
    request = api.requests[-1]
    assert request["path"] == "/v1beta/models/test-model:generateContent"
    assert request["headers"]["x-goog-api-key"] == "k-123"
    video_part, text_part = request["json"]["contents"][0]["parts"]
    video = base64.b64decode(video_part["inline_data"]["data"])
    assert video_part["inline_data"]["mime_type"] == "video/mp4" and video[4:8] == b"ftyp"
    assert "J. violin" in text_part["text"]


def test_malformed_and_unparseable_replies_are_retried_until_one_parses(walk_joints):
    sleeps = []
    replies = [
        (200, b"<html>upstream error</html>"),  # not JSON
        (200, {"candidates": []}),  # JSON without an answer
        gemini_reply("I am not able to decide."),  # no option named
        gemini_reply("**yes** - the person walks"),
    ]
    with ScriptedAPI(replies) as api:
        judge = make_judge(api, "gemini", sleeps)
        assert judge.matches(walk_joints, "a person walks forward") is True
    assert len(api.requests) == 4 and sleeps == [0.5, 1.0, 2.0]  # exponential backoff


def test_openai_compatible_judge_sends_frames_and_parses_yes_no(walk_joints):
    sleeps = []
    with ScriptedAPI([(429, {"error": {"message": "rate limited"}}), openai_reply("No."), openai_reply("Option C")]) as api:
        judge = make_judge(api, "openai", sleeps)
        assert judge.matches(walk_joints, "a person swims") is False
        assert judge.choose(walk_joints, LABELS) == 2
    first = api.requests[1]
    assert first["path"] == "/chat/completions" and first["headers"]["Authorization"] == "Bearer k-123"
    content = first["json"]["messages"][0]["content"]
    images = [part for part in content if part["type"] == "image_url"]
    # 26 frames at 20 fps sampled at 5 fps -> 7 frames.
    assert len(images) == 7 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_judge_gives_up_with_a_clear_error(walk_joints):
    with ScriptedAPI([(503, {}), (503, {}), (503, {}), (503, {})]) as api:
        with pytest.raises(vlm.JudgeError, match="4 attempts.*HTTP 503"):
            make_judge(api, "gemini", []).matches(walk_joints, "walking")
    with ScriptedAPI([(401, {"error": {"message": "API key not valid"}})]) as api:
        with pytest.raises(vlm.JudgeError, match="HTTP 401"):
            make_judge(api, "openai", []).matches(walk_joints, "walking")
        assert len(api.requests) == 1  # not retried


def test_vlm_config_reads_the_environment(monkeypatch):
    for name in ("VIMOGEN_VLM_PROVIDER", "VIMOGEN_VLM_BASE_URL", "VIMOGEN_VLM_API_KEY", "GEMINI_API_KEY",
                 "GOOGLE_API_KEY", "OPENAI_API_KEY", "VIMOGEN_VLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="API key"):
        vlm.VLMConfig.from_env()
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    assert vlm.VLMConfig.from_env().provider == "gemini"
    monkeypatch.setenv("VIMOGEN_VLM_PROVIDER", "openai")
    monkeypatch.setenv("VIMOGEN_VLM_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("VIMOGEN_VLM_API_KEY", "o")
    config = vlm.VLMConfig.from_env()
    assert (config.provider, config.base_url, config.api_key) == ("openai", "http://127.0.0.1:9/v1", "o")


# --- the local judge on real motion-capture clips -----------------------------------------------

from vimogen_core.bench.evaluator import EvaluatorConfig  # noqa: E402
from vimogen_core.bench.judges import LocalJudge, builtin_judge_data, train_local_judge  # noqa: E402
from vimogen_core.errors import MotionDataError  # noqa: E402


@pytest.fixture(scope="module")
def trained_judge() -> LocalJudge:
    return train_local_judge(config=EvaluatorConfig.preset("quick"))


@pytest.fixture(scope="module")
def heldout_clips():
    return builtin_judge_data()[1]


@pytest.mark.slow
def test_local_judge_beats_chance_on_held_out_captions(trained_judge, heldout_clips):
    calibration = trained_judge.calibration
    # True caption (never trained on) vs 9 captions of other clips: chance is 10%.
    assert calibration.ten_way_accuracy >= 0.4 and calibration.ten_way_trials == 15 * 20
    assert calibration.balanced_accuracy >= 0.75
    # The threshold comes from the held-out similarities: it separates their means.
    evaluator = trained_judge.evaluator
    similarity = evaluator.similarity([c.joints for c in heldout_clips], [c.captions[0] for c in heldout_clips])
    matched, mismatched = np.diag(similarity), similarity[~np.eye(len(similarity), dtype=bool)]
    assert mismatched.mean() < calibration.threshold < matched.mean()
    says_yes = [trained_judge.matches(c.joints, c.captions[0]) for c in heldout_clips]
    assert np.mean(says_yes) >= 0.6
    walk, backflip = heldout_clips[0], heldout_clips[7]
    assert (walk.name, backflip.name) == ("walk", "backflip")
    assert trained_judge.choose(walk.joints, [backflip.captions[0], walk.captions[0]]) == 1


@pytest.mark.slow
def test_local_judge_round_trips_through_safetensors_and_json(trained_judge, heldout_clips, tmp_path):
    folder = trained_judge.save(tmp_path / "judge")
    assert {p.name for p in folder.iterdir()} == {"evaluator.safetensors", "evaluator.json", "judge.json"}
    loaded = LocalJudge.load(folder)
    motions, texts = [c.joints for c in heldout_clips], [c.captions[0] for c in heldout_clips]
    np.testing.assert_allclose(loaded.evaluator.similarity(motions, texts),
                               trained_judge.evaluator.similarity(motions, texts), atol=1e-5)
    assert loaded.name == trained_judge.name and "calibrated on 15 built-in mocap clips" in loaded.name
    (folder / "judge.json").write_text("{not json")
    with pytest.raises(MotionDataError, match="judge.json: bad judge file"):
        LocalJudge.load(folder)


@pytest.mark.slow
def test_runner_scores_the_text_dimensions_with_the_local_judge(trained_judge, tmp_path):
    from vimogen_core.bench.prompts import builtin_prompts
    from vimogen_core.bench.runner import score_directory

    clip_for_label = {"walking": "walk", "running": "run", "jumping": "jump", "kicking": "kick",
                      "punching": "punch", "spinning in place": "spin", "crawling": "crawl",
                      "doing a cartwheel": "cartwheel"}
    folder = tmp_path / "generated"
    folder.mkdir()
    prompts = [p for p in builtin_prompts() if p.group in ("Motion_Condition_Consistency", "Motion_Generalizability")]
    for prompt in prompts:
        name = clip_for_label.get(prompt.text, "walk")
        np.save(folder / f"{prompt.global_id}.npy", load_builtin_clip(name).motion.joints.numpy())
    np.save(folder / f"{prompts[-1].global_id}.npy", np.zeros((1, 22, 3)))  # one bad motion
    result = score_directory(folder, None, tmp_path / "out", prompts_path="builtin",
                             judge_factory=lambda: trained_judge)
    mcc = result.aggregates["Motion_Condition_Consistency"]
    assert mcc["count"] == 8 and mcc["mean"] >= 0.5  # real clips of the labelled actions
    generalizability = result.aggregates["Motion_Generalizability"]
    assert generalizability["count"] == 5 and generalizability["errors"] == 1
    assert result.metadata["judge"] == trained_judge.name
    choices = [r["choice"] for r in result.per_motion if r["dimension"] == "Motion_Condition_Consistency"]
    assert len(choices) == 8


@pytest.mark.slow
def test_classic_metrics_with_the_evaluator_prefer_motions_of_the_described_action(trained_judge):
    from vimogen_core.bench.classic import classic_metrics
    from vimogen_core.sources.deepmimic import builtin_clip_names

    rng = np.random.default_rng(0)
    clips = {name: load_builtin_clip(name, min_frames=160) for name in builtin_clip_names()}

    def window(name: str) -> np.ndarray:
        joints = clips[name].motion.joints.numpy()
        start = int(rng.integers(0, len(joints) - 60 + 1))
        return joints[start : start + 60]

    names = [builtin_clip_names()[i % 15] for i in range(64)]
    texts = [clips[n].captions[i % 2] for i, n in enumerate(names)]
    real = [window(n) for n in names]
    faithful = [window(n) for n in names]  # other windows of the described clip
    unrelated = [window(names[(i + 5) % 64]) for i in range(64)]  # some other clip's motion
    multimodal = [[window(n) for _ in range(3)] for n in names[:15]]
    good = classic_metrics(trained_judge.evaluator, texts, real, faithful, multimodal, repetitions=20)
    bad = classic_metrics(trained_judge.evaluator, texts, real, unrelated, repetitions=20)
    assert good["evaluator"] == "local-contrastive" and good["repetitions"] == 20 and good["batch_size"] == 32
    g, b = good["generated"], bad["generated"]
    assert g["R_precision_top3"]["mean"] > b["R_precision_top3"]["mean"] + 0.2
    assert g["MM_Dist"]["mean"] < b["MM_Dist"]["mean"]
    assert g["R_precision_top1"]["mean"] <= g["R_precision_top2"]["mean"] <= g["R_precision_top3"]["mean"]
    assert g["MultiModality"]["mean"] > 0 and g["Diversity"]["mean"] > 0
    assert good["real"]["R_precision_top3"]["mean"] > 0.5


def test_runner_records_a_vlm_failure_for_one_motion_and_scores_the_others(tmp_path, walk_joints):
    from vimogen_core.bench.prompts import builtin_prompts
    from vimogen_core.bench.runner import score_directory

    folder = tmp_path / "generated"
    folder.mkdir()
    prompts = [p for p in builtin_prompts() if p.group == "Motion_Generalizability"][:3]
    for prompt in prompts:
        np.save(folder / f"{prompt.global_id}.npy", walk_joints)
    replies = [gemini_reply("Yes"), (503, {}), (503, {}), gemini_reply("no")]
    with ScriptedAPI(replies) as api:
        config = vlm.VLMConfig(provider="gemini", base_url=api.url, model="m", api_key="k", max_attempts=2, backoff_s=0)
        result = score_directory(folder, ["Motion_Generalizability"], tmp_path / "out", prompts_path="builtin",
                                 judge_factory=lambda: vlm.VLMJudge(config, sleep=lambda s: None))
    rows = sorted(result.per_motion, key=lambda r: r["id"])  # the three saved, then three never generated
    assert [r["value"] for r in rows] == [1.0, None, 0.0, None, None, None]
    assert "JudgeError" in rows[1]["error"] and "HTTP 503" in rows[1]["error"]
    assert all("motion file not found" in r["error"] for r in rows[3:])
    aggregate = result.aggregates["Motion_Generalizability"]
    assert (aggregate["mean"], aggregate["count"], aggregate["errors"]) == (0.5, 2, 4)
    assert result.metadata["judge"] == "vlm:gemini:m"


@pytest.mark.slow
def test_bench_run_generates_with_a_trained_checkpoint_and_writes_every_file(trained_judge, tmp_path, monkeypatch):
    import vimogen_core.bench.runner as runner
    from vimogen_core.train.config import apply_overrides, get_train_preset
    from vimogen_core.train.loop import train

    config = apply_overrides(get_train_preset("tiny"), ["steps=2", "batch_size=4", "checkpoint_every=2"])
    checkpoint = train(config, tmp_path / "run", progress=False).checkpoint
    # The CLI's default judge factory, pointed at the judge trained above, so nothing retrains.
    monkeypatch.setattr(runner, "default_judge_factory", lambda: trained_judge)
    out = tmp_path / "mbench"
    result = runner.run_mbench(checkpoint, out_dir=out, steps=4, judge_factory=runner.default_judge_factory)
    assert {p.name for p in out.iterdir()} >= {"scores.json", "per_motion.jsonl", "metadata.json", "report.md", "motions"}
    assert len(list((out / "motions").glob("*.npy"))) == 30 and len(list((out / "motions" / "features").glob("*.npy"))) == 30
    assert result.metadata["checkpoint"] == str(checkpoint) and result.metadata["timing_s"]["generate"] > 0
    assert result.metadata["judge"] == trained_judge.name and "knn-posebank" in result.metadata["pose_scorer"]
    for dimension in ("Jitter_Degree", "Foot_Floating", "Body_Penetration", "Pose_Quality",
                      "Motion_Condition_Consistency", "Motion_Generalizability"):
        assert result.aggregates[dimension]["count"] >= 1, dimension
    assert all(r["error"] is None for r in result.per_motion), [r for r in result.per_motion if r["error"]][:3]
    # Generated motions keep their requested lengths; the report names the checkpoint's model.
    assert np.load(out / "motions" / "0.npy").shape == (builtin_prompts_frames(0), 22, 3)
    assert f"| **{checkpoint.stem}** |" in (out / "report.md").read_text()
    # The clean-up applied to every generated motion is named in the report, and was applied:
    # the motions start at the origin like the data.
    assert "post-processing: clean-up: positions fused with velocities" in (out / "report.md").read_text()
    assert max(float(np.linalg.norm(np.load(f)[0, 0, :2])) for f in (out / "motions").glob("*.npy")) < 1e-4


def builtin_prompts_frames(global_id: int) -> int:
    from vimogen_core.bench.prompts import builtin_prompts

    return builtin_prompts()[global_id].n_frames
