"""Video-language-model judge: render the motion, ask a hosted model, parse its answer.

Providers (plain HTTPS through `requests`; no SDK needed):
- "gemini": Google's Generative Language REST API (`/v1beta/models/{model}:generateContent`),
  the video sent inline as MP4 sampled at 5 fps.
- "openai": any OpenAI-compatible `/chat/completions` endpoint; the 5 fps frames go as JPEG images.

Configuration comes from the environment (never from files): VIMOGEN_VLM_PROVIDER,
VIMOGEN_VLM_BASE_URL, VIMOGEN_VLM_MODEL, and the key in VIMOGEN_VLM_API_KEY (or GEMINI_API_KEY /
GOOGLE_API_KEY / OPENAI_API_KEY). Transient failures (connection errors, 429, 5xx, malformed
bodies, answers that cannot be parsed) are retried with exponential backoff.
"""
from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_FPS = 5
MOTION_FPS = 20
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class JudgeError(RuntimeError):
    """The judge could not produce an answer (after retries)."""


def parse_choice(answer: str, candidates: Sequence[str]) -> int | None:
    """Index of the option an answer names: a letter ("C", "(C)", "Answer: C"), a 1-based number,
    or the label text itself. None when it names none or several."""
    text = answer.strip().strip("*_`\"' ")
    n = len(candidates)
    letters = OPTION_LETTERS[:n]

    def from_token(token: str) -> int | None:
        if token.isdigit():
            return int(token) - 1 if 1 <= int(token) <= n else None
        token = token.upper()
        return letters.index(token) if token in letters else None

    explicit = re.search(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([A-Za-z]|\d{1,2})\b[)\]]?", text, re.I)
    if explicit and (index := from_token(explicit.group(1))) is not None:
        return index
    leading = re.match(r"^[(\[]?([A-Z]|\d{1,2})(?:[.):\]]|\s*$)", text)
    if leading and (index := from_token(leading.group(1))) is not None:
        return index
    lowered = text.lower()
    named = [i for i, c in enumerate(candidates) if c.strip() and c.strip().lower() in lowered]
    # A label contained in a longer named label ("violin" in "playing violin") is not a second answer.
    named = [i for i in named if not any(j != i and candidates[i].lower() in candidates[j].lower() for j in named)]
    if len(named) == 1:
        return named[0]
    bracketed = set(re.findall(r"[(\[]([A-Z])[)\]]", text))
    if len(bracketed) == 1 and (index := from_token(bracketed.pop())) is not None:
        return index
    return None


def parse_yes_no(answer: str) -> bool | None:
    """True/False from the first "yes" or "no" word of an answer; None when it has neither."""
    match = re.search(r"\b(yes|no)\b", answer, re.I)
    return None if match is None else match.group(1).lower() == "yes"


def choice_question(candidates: Sequence[str]) -> str:
    options = "\n".join(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(candidates))
    return (
        "The video shows a 3D human skeleton performing a motion. Which description fits the motion best?\n"
        f"{options}\nAnswer with the letter of one option only."
    )


def yes_no_question(text: str) -> str:
    return (
        "The video shows a 3D human skeleton performing a motion. Does the motion match this description: "
        f'"{text}"? Answer yes or no.'
    )


def render_video(joints: np.ndarray, fps: float = VIDEO_FPS, motion_fps: float = MOTION_FPS) -> bytes:
    """(T, 22, 3) joints -> MP4 bytes of the project's stick-figure render, sampled at `fps`."""
    import tempfile

    from vimogen_core.motion.render import RENDER_PRESETS, render_motion

    sampled = np.asarray(joints)[:: max(1, round(motion_fps / fps))]
    with tempfile.TemporaryDirectory() as folder:
        path = render_motion(sampled, Path(folder) / "motion.mp4", fps=fps, config=RENDER_PRESETS["preview"])
        return path.read_bytes()


def video_frames(video: bytes) -> np.ndarray:
    """MP4 bytes -> (F, H, W, 3) uint8 frames."""
    import imageio.v3 as iio

    return iio.imread(video, extension=".mp4", index=None)


def encode_jpeg(frame: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", frame, extension=".jpeg")


@dataclass(frozen=True)
class VLMConfig:
    provider: str  # "gemini" | "openai"
    base_url: str
    model: str
    api_key: str
    max_attempts: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    max_images: int = 24  # OpenAI-compatible endpoints: frames per request

    @classmethod
    def from_env(cls, **overrides) -> VLMConfig:
        env = os.environ
        gemini_key = env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
        provider = env.get("VIMOGEN_VLM_PROVIDER") or ("gemini" if gemini_key else "openai")
        if provider not in ("gemini", "openai"):
            raise ValueError(f"VIMOGEN_VLM_PROVIDER must be 'gemini' or 'openai', got {provider!r}")
        defaults = {
            "gemini": ("https://generativelanguage.googleapis.com", "gemini-2.5-flash", gemini_key),
            "openai": ("https://api.openai.com/v1", "gpt-4o-mini", env.get("OPENAI_API_KEY")),
        }[provider]
        values = {
            "provider": provider,
            "base_url": env.get("VIMOGEN_VLM_BASE_URL", defaults[0]).rstrip("/"),
            "model": env.get("VIMOGEN_VLM_MODEL", defaults[1]),
            "api_key": env.get("VIMOGEN_VLM_API_KEY") or defaults[2] or "",
        } | overrides
        if not values["api_key"]:
            raise ValueError("no API key for the VLM judge: set VIMOGEN_VLM_API_KEY (or GEMINI_API_KEY / OPENAI_API_KEY)")
        return cls(**values)


class VLMJudge:
    """Asks a video-language model about a rendered video of the motion."""

    def __init__(self, config: VLMConfig, renderer: Callable[[np.ndarray], bytes] = render_video,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.renderer = renderer
        self.sleep = sleep
        self.requests_made = 0

    @property
    def name(self) -> str:
        return f"vlm:{self.config.provider}:{self.config.model}"

    def choose(self, motion: np.ndarray, candidates: Sequence[str]) -> int:
        return self._ask(motion, choice_question(candidates), lambda a: parse_choice(a, candidates))

    def matches(self, motion: np.ndarray, text: str) -> bool:
        return self._ask(motion, yes_no_question(text), parse_yes_no)

    # --- transport ---

    def _payload(self, video: bytes, question: str) -> tuple[str, dict, dict]:
        c = self.config
        if c.provider == "gemini":
            video = base64.b64encode(video).decode()
            body = {"contents": [{"role": "user", "parts": [
                {"inline_data": {"mime_type": "video/mp4", "data": video}}, {"text": question}]}]}
            return f"{c.base_url}/v1beta/models/{c.model}:generateContent", {"x-goog-api-key": c.api_key}, body
        frames = video_frames(video)
        step = max(1, int(np.ceil(len(frames) / c.max_images)))
        images = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(f)).decode()}}
                  for f in frames[::step]]
        body = {"model": c.model, "temperature": 0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": question}, *images]}]}
        return f"{c.base_url}/chat/completions", {"Authorization": f"Bearer {c.api_key}"}, body

    def _answer_text(self, body: dict) -> str:
        if self.config.provider == "gemini":
            parts = body["candidates"][0]["content"]["parts"]
            return "".join(p.get("text", "") for p in parts)
        return body["choices"][0]["message"]["content"]

    def _ask(self, motion: np.ndarray, question: str, parse):
        import requests

        url, headers, body = self._payload(self.renderer(motion), question)
        last_problem = "no attempt made"
        for attempt in range(self.config.max_attempts):
            if attempt:
                self.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            self.requests_made += 1
            try:
                response = requests.post(url, json=body, headers=headers, timeout=self.config.timeout_s)
            except requests.RequestException as err:
                last_problem = f"request failed: {err}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_problem = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise JudgeError(f"{self.name}: HTTP {response.status_code}: {response.text[:200]}")
            try:
                answer = self._answer_text(response.json())
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                last_problem = f"malformed response body: {response.text[:200]!r}"
                continue
            parsed = parse(answer or "")
            if parsed is not None:
                return parsed
            last_problem = f"unparseable answer: {answer[:200]!r}"
        raise JudgeError(f"{self.name}: no usable answer after {self.config.max_attempts} attempts ({last_problem})")
