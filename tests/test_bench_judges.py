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
