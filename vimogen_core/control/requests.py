"""A generation request as a server receives it, checked against limits before any model work.

One implementation for every consumer: the MLflow pyfunc (`mlflow models serve`), the `vimogen serve`
front that runs it, and the playground. Every refusal is a `RequestError` carrying the HTTP status
to answer (4xx) and a one-line reason naming the row and field. The limits bound what one request
can cost: its body, its rows, each prompt, each motion's frames, each reference motion, and the
size and nesting of every JSON value (README "Serving under load" lists them).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vimogen_core.control.constraints import ConstraintError
from vimogen_core.control.files import CONTROL_COLUMNS, timeline_from_json
from vimogen_core.control.timeline import check_timeline
from vimogen_core.motion.representation import FEATURE_DIM
from vimogen_core.train.generate import MAX_FRAMES

DEFAULT_FRAMES = 100
MAX_SEED = 2**31 - 1  # row i of a request draws seed + i; torch seeds take far more, clients rarely need it
COLUMNS = ("prompt", "frames", "seed", "ref_motion", *CONTROL_COLUMNS)
# The request bodies MLflow's scoring server reads (the pandas orientations); others are refused.
BODY_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = 4 * 2**20  # a 1000-frame reference motion at 5 decimals is about 2.5 MB of JSON
    max_rows: int = 16  # motions per request
    max_prompt_chars: int = 1000  # the text encoder reads far fewer tokens; a longer text is a mistake or an attack
    max_json_depth: int = 6  # nesting of one JSON column (keyframe positions, the deepest, use 4)
    max_json_chars: int = 3 * 2**20  # one JSON column's text
    max_segments: int = 50  # timeline segments (the whole timeline stays within MAX_FRAMES)

    def __post_init__(self):
        bad = {name: value for name, value in vars(self).items() if not isinstance(value, int) or value < 1}
        if bad:
            raise ValueError(f"request limits must be whole numbers >= 1, got {bad}")


class RequestError(ValueError):
    """A refused request: `status` is the HTTP status to answer, `str(err)` the one-line reason."""

    def __init__(self, reason: str, status: int = 400):
        self.status = status
        super().__init__(" ".join(str(reason).split()))  # one line whatever the reason quoted


@dataclass
class Row:
    """One checked motion request. `controls` holds the parsed JSON values of the control columns given."""
    prompt: str
    frames: int
    seed: int
    ref_motion: np.ndarray | None = None
    controls: dict[str, Any] = field(default_factory=dict)


def _missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def whole_number(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in low..high (a float only when whole: JSON and pandas turn ints into floats)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RequestError(f"{name} must be a whole number, got {type(value).__name__} {_shown(value)}")
    if isinstance(value, (float, np.floating)) and (not math.isfinite(value) or value != int(value)):
        raise RequestError(f"{name} must be a whole number, got {value!r}")
    if low is not None and high is not None and not low <= int(value) <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _shown(value, limit: int = 40) -> str:
    """`value` for a message: its repr (a text as it is), cut short."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_prompt(prompt, name: str, limits: RequestLimits, required: bool = True) -> str:
    """A prompt as a stripped UTF-8 text within the length limit; empty only when not `required`."""
    if _missing(prompt):
        prompt = ""
    if not isinstance(prompt, str):
        raise RequestError(f"{name} must be text, got {type(prompt).__name__} {_shown(prompt)}")
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(f"{name} is {len(prompt)} characters; the limit is {limits.max_prompt_chars}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates: what undecodable bytes become
        raise RequestError(f"{name} is not valid Unicode text (character {err.start})") from None
    prompt = prompt.strip()
    if required and not prompt:
        raise RequestError(f"{name} is empty; describe the motion")
    return prompt


def check_frames(value, name: str = "frames") -> int:
    """A motion's frame count, 1..MAX_FRAMES (the generator's own range, named as it names it)."""
    frames = whole_number(value, name)
    if not 1 <= frames <= MAX_FRAMES:
        raise RequestError(f"{name}: frame count {frames} out of range 1..{MAX_FRAMES}")
    return frames


def check_seed(value, name: str = "seed") -> int:
    return whole_number(value, name, 0, MAX_SEED)


def _refuse_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _depth(value, limit: int, where: str, max_items: int | None = MAX_FRAMES, depth: int = 1) -> None:
    """Refuse values nested deeper than `limit`, lists longer than `max_items` (a motion's frames)
    and non-finite numbers; walks each element once."""
    if depth > limit:
        raise RequestError(f"{where}: JSON nested deeper than {limit} levels")
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list):
        if max_items is not None and len(value) > max_items:
            raise RequestError(f"{where}: a list of {len(value)} items; the limit is {max_items} (one per frame)")
        items = value
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(f"{where}: non-finite number {value}")
        return
    for item in items:
        if isinstance(item, (dict, list)) or isinstance(item, float):
            _depth(item, limit, where, max_items, depth + 1)


def json_value(text, where: str, limits: RequestLimits):
    """A JSON column: its text (or an already parsed value) checked for size, nesting and finiteness."""
    if isinstance(text, str):
        if len(text) > limits.max_json_chars:
            raise RequestError(f"{where}: {len(text)} characters of JSON; the limit is {limits.max_json_chars}", 413)
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise RequestError(f"{where}: JSON nested deeper than {limits.max_json_depth} levels") from None
        except ValueError as err:  # JSONDecodeError, and the refused NaN/Infinity
            raise RequestError(f"{where}: not valid JSON ({err})") from None
    elif isinstance(text, (dict, list)):
        value = text
    else:
        raise RequestError(f"{where}: expected JSON text, got {type(text).__name__} {_shown(text)}")
    _depth(value, limits.max_json_depth, where)
    return value


def check_ref_motion(value, where: str, limits: RequestLimits) -> np.ndarray:
    """A reference motion: (T, 276) finite features, 1 <= T <= MAX_FRAMES."""
    parsed = json_value(value, where, limits)
    try:
        motion = np.asarray(parsed, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(f"{where}: expected rows of {FEATURE_DIM} numbers") from None
    if motion.ndim != 2 or motion.shape[1] != FEATURE_DIM:
        raise RequestError(f"{where}: expected rows of {FEATURE_DIM} numbers, got shape {motion.shape}")
    if not 1 <= len(motion) <= MAX_FRAMES:
        raise RequestError(f"{where}: {len(motion)} frames; 1 to {MAX_FRAMES} allowed")
    with np.errstate(over="ignore"):  # what float32 cannot hold becomes inf, refused below
        motion = motion.astype(np.float32)
    if not np.isfinite(motion).all():
        bad = int((~np.isfinite(motion)).any(axis=1).sum())
        raise RequestError(f"{where}: non-finite values in {bad} frame(s)")
    return motion


def _check_controls(controls: dict, where: str, limits: RequestLimits) -> None:
    """What the control parsers would accept but a server must not: file paths and over-long timelines."""
    keyframes = controls.get("keyframes")
    if isinstance(keyframes, dict) and isinstance(keyframes.get("poses"), str):
        # the CLI reads poses from a file; a served request would name files on the server
        raise RequestError(f"{where} keyframes: 'poses' must be rows of {FEATURE_DIM} numbers in a served request, "
                           "not a file name")
    if "timeline" in controls:
        try:
            segments = timeline_from_json(controls["timeline"], f"{where} timeline")
            if len(segments) > limits.max_segments:
                raise RequestError(f"{where} timeline: {len(segments)} segments; the limit is {limits.max_segments}")
            for i, segment in enumerate(segments):
                check_prompt(segment.prompt, f"{where} timeline segment {i} prompt", limits)
            total = sum(check_timeline(segments))
        except ConstraintError as err:
            raise RequestError(str(err)) from None
        if total > MAX_FRAMES:
            raise RequestError(f"{where} timeline: {total} frames in all; the limit is {MAX_FRAMES}")


def check_rows(records, limits: RequestLimits = RequestLimits()) -> list[Row]:
    """Records (one dict per motion, README "Serving under load") -> checked rows. The request's seed is its
    first row's: motion i draws seed + i, as a batch does."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError("expected one JSON object per motion")
    if not records:
        raise RequestError("the request has no rows")
    if len(records) > limits.max_rows:
        raise RequestError(f"{len(records)} rows; the limit is {limits.max_rows} per request", 413)
    rows = []
    for i, record in enumerate(records):
        where = f"row {i}"
        unknown = sorted(str(k) for k in record if k not in COLUMNS)
        if unknown:
            raise RequestError(f"{where}: unknown column(s) {_shown(', '.join(unknown), 80)}; "
                               f"known: {', '.join(COLUMNS)}")
        if "prompt" not in record:
            raise RequestError(f"{where}: needs a 'prompt' column (one text per motion)")
        ref = record.get("ref_motion")
        ref = None if _missing(ref) or ref == "" else check_ref_motion(ref, f"{where} ref_motion", limits)
        controls = {name: json_value(record[name], f"{where} {name}", limits) for name in CONTROL_COLUMNS
                    if not _missing(record.get(name)) and record.get(name) != ""}
        _check_controls(controls, where, limits)
        prompt = check_prompt(record["prompt"], f"{where} prompt", limits,
                              required=ref is None and "timeline" not in controls)
        frames = record.get("frames")
        frames = DEFAULT_FRAMES if _missing(frames) else check_frames(frames, f"{where} frames")
        seed = record.get("seed")
        seed = 0 if _missing(seed) else check_seed(seed, f"{where} seed")
        rows.append(Row(prompt, frames, seed, ref, controls))
    return rows


def parse_body(body: bytes, content_type: str | None, limits: RequestLimits = RequestLimits()) -> list[Row]:
    """An HTTP request body as MLflow's scoring server takes it (JSON, a pandas orientation under one
    of BODY_KEYS) -> checked rows."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(f"body of {len(body)} bytes; the limit is {limits.max_body_bytes}", 413)
    mime, *parameters = [part.strip().lower() for part in (content_type or "").split(";")]
    if mime != "application/json":
        raise RequestError(f"content type must be application/json, got {content_type or 'none'!r}", 415)
    for parameter in parameters:
        if parameter.partition("=")[0] == "charset" and parameter.partition("=")[2].strip('"') != "utf-8":
            raise RequestError(f"only UTF-8 bodies are read, got {parameter}", 415)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"body is not UTF-8 (byte {err.start})") from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError("body: JSON nested too deeply") from None
    except json.JSONDecodeError as err:  # a truncated body ends here too
        raise RequestError(f"body is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except ValueError as err:  # the refused NaN/Infinity, or an integer of thousands of digits
        raise RequestError(f"body is not valid JSON ({str(err).split(';')[0]})") from None
    if not isinstance(document, dict):
        raise RequestError(f"body must be a JSON object with one of {', '.join(BODY_KEYS)}")
    keys = [key for key in document if key in BODY_KEYS]
    if len(keys) != 1 or len(document) != 1:
        raise RequestError(f"body must have exactly one key of {', '.join(BODY_KEYS)}; got {_shown(sorted(document), 80)}")
    # the orientation's own 2-3 levels around each column; rows are counted by check_rows
    _depth(document, limits.max_json_depth + 3, "body", max_items=None)
    return check_rows(_records(keys[0], document[keys[0]]), limits)


def _records(key: str, data) -> list:
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or not isinstance(data.get("data"), list):
            raise RequestError("dataframe_split needs 'columns' (names) and 'data' (one list per row)")
        columns = data["columns"]
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise RequestError("dataframe_split columns must be distinct names")
        if not all(isinstance(row, list) and len(row) == len(columns) for row in data["data"]):
            raise RequestError(f"dataframe_split: every data row needs {len(columns)} values, one per column")
        return [dict(zip(columns, row)) for row in data["data"]]
    if isinstance(data, dict):  # columnar `inputs`/`instances`: {"prompt": [...], "frames": [...]}
        lengths = {len(v) for v in data.values() if isinstance(v, list)}
        if len(lengths) != 1 or not all(isinstance(v, list) for v in data.values()):
            raise RequestError(f"{key} as columns needs one list per column, all of one length")
        return [dict(zip(data, values)) for values in zip(*data.values())]
    return data
