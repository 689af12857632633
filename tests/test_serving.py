"""Serving under load and hostile input: `vimogen serve` runs the registry's champion (a tiny model
trained here, registered in a SQLite registry) as its own process on 127.0.0.1. Every kind of bad
request gets a 4xx and a one-line reason, a good request after each still answers exactly as
before, and the server never restarts; under concurrent clients it answers 200 or the documented
503, the same seed gives the same motion as a lone request, and its peak memory stays bounded. The
same limits hold in the pyfunc itself (`mlflow models serve`) and in the playground's Generate."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from vimogen_core.control.requests import RequestError, RequestLimits, check_rows, parse_body

FAST = ["batch_size=4", "bf16=false", "steps=2", "warmup_steps=1", "checkpoint_every=2",
        "model.dim=64", "model.ffn_dim=128", "model.num_heads=4", "model.num_layers=2"]
GOOD = {"prompt": "a person walks forward", "frames": 24, "seed": 3}
READ_TIMEOUT = 1  # the server's --read-timeout here: the slow client's case waits this long


def body(*records, key="dataframe_records") -> bytes:
    return json.dumps({key: list(records)}).encode()


def row(**columns) -> bytes:
    return body(GOOD | columns)


def ref_rows(n: int, width: int = 276, value: str = "0.1") -> str:
    return "[" + ",".join(["[" + ",".join([value] * width) + "]"] * n) + "]"


NESTED = "[" * 5000 + "]" * 5000
# (what, body, content type, status, words the one-line reason must contain)
BAD_REQUESTS = [
    ("not JSON", b"not json", "application/json", 400, "not valid JSON"),
    ("empty body", b"", "application/json", 400, "not valid JSON"),
    ("truncated body", row()[:-9], "application/json", 400, "not valid JSON"),
    ("non-UTF-8 bytes", b'{"dataframe_records": [{"prompt": "a \xff\xfe walk"}]}', "application/json", 400, "not UTF-8"),
    ("10 MB body", b'{"dataframe_records": [{"prompt": "' + b"a" * 10_000_000 + b'"}]}', "application/json", 413, "limit"),
    ("10,000 rows", body(*[GOOD] * 10_000), "application/json", 413, "10000 rows"),
    ("100 KB prompt", row(prompt="walk " * 20_000), "application/json", 400, "100000 characters"),
    ("deeply nested body", b'{"dataframe_records": ' + NESTED.encode() + b"}", "application/json", 400, "nested"),
    ("deeply nested control column", row(keyframes='{"frames": [[[[[[[[1]]]]]]]]}'), "application/json", 400,
     "nested deeper"),
    ("missing prompt column", body({"frames": 24}), "application/json", 400, "'prompt'"),
    ("extra column", row(temperature=0.7), "application/json", 400, "unknown column(s) temperature"),
    ("negative frame count", row(frames=-5), "application/json", 400, "frame count -5"),
    ("huge frame count", row(frames=10**12), "application/json", 400, "frame count 1000000000000"),
    ("zero frames", row(frames=0), "application/json", 400, "frame count 0"),
    ("fractional frames", row(frames=24.5), "application/json", 400, "whole number"),
    ("frames as text", row(frames="24"), "application/json", 400, "whole number"),
    ("frames as a boolean", row(frames=True), "application/json", 400, "whole number"),
    ("frames NaN literal", row().replace(b'"frames": 24', b'"frames": NaN'), "application/json", 400, "non-finite"),
    ("frames 1e999", row().replace(b'"frames": 24', b'"frames": 1e999'), "application/json", 400, "non-finite"),
    ("prompt as a number", row(prompt=42), "application/json", 400, "prompt must be text"),
    ("prompt as a list", row(prompt=["walk"]), "application/json", 400, "prompt must be text"),
    ("blank prompt", row(prompt="   "), "application/json", 400, "prompt is empty"),
    ("NaN in ref_motion", row(ref_motion=ref_rows(3, value="NaN")), "application/json", 400, "non-finite"),
    ("Infinity in ref_motion", row(ref_motion=ref_rows(3, value="1e999")), "application/json", 400, "non-finite"),
    ("ref_motion past float32", row(ref_motion=ref_rows(3, value="1e39")), "application/json", 400, "non-finite"),
    ("ref_motion 138 wide", row(ref_motion=ref_rows(10, width=138)), "application/json", 400, "276"),
    ("ref_motion of 2000 frames", row(ref_motion=ref_rows(2000, value="0")), "application/json", 400, "2000 items"),
    ("ref_motion not JSON", row(ref_motion="[[0.1, 0.2"), "application/json", 400, "ref_motion: not valid JSON"),
    ("ref_motion a number", row(ref_motion=5), "application/json", 400, "expected JSON text"),
    ("negative seed", row(seed=-1), "application/json", 400, "seed must be between 0"),
    ("huge seed", row(seed=2**70), "application/json", 400, "seed must be between 0"),
    ("body a list", json.dumps([GOOD]).encode(), "application/json", 400, "JSON object"),
    ("unknown body key", json.dumps({"rows": [GOOD]}).encode(), "application/json", 400, "exactly one key"),
    ("no rows", body(), "application/json", 400, "no rows"),
    ("split with a short row", json.dumps({"dataframe_split": {"columns": ["prompt", "frames"], "data": [["walk"]]}})
     .encode(), "application/json", 400, "2 values"),
    ("text/plain", row(), "text/plain", 415, "application/json"),
    ("latin-1 charset", row(), "application/json; charset=latin-1", 415, "UTF-8"),
    ("timeline of an hour", row(timeline=json.dumps([{"prompt": "walk", "seconds": 3600}])), "application/json", 400,
     "frames in all"),
    ("keyframe poses from a server file", row(keyframes=json.dumps({"frames": [0], "poses": "/etc/hostname"})),
     "application/json", 400, "not a file name"),
    ("trajectory not an object", row(trajectory="[1, 2]"), "application/json", 400, "expected a JSON object"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vimogen_core.train.config import apply_overrides, get_train_preset
    from vimogen_core.train.loop import train

    return train(apply_overrides(get_train_preset("tiny"), FAST), tmp_path_factory.mktemp("run"),
                 progress=False).checkpoint


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """`vimogen serve` on the champion: one worker, two waiting requests, so eight clients overflow it."""
    from orchestration.model_server import register_champion
    from playground.browser import free_port, start_model_server, stop_server

    state = tmp_path_factory.mktemp("state")
    uri = register_champion(checkpoint, state)
    port = free_port()
    proc = start_model_server(["--model-uri", "models:/vimogen@champion", "--workers", "1", "--queue", "2",
                               "--read-timeout", str(READ_TIMEOUT), "--threads", "1"], port,
                              env={"MLFLOW_TRACKING_URI": uri, "VIMOGEN_STATE_DIR": str(state), "OMP_NUM_THREADS": "1"},
                              log=state / "server.log")
    yield proc, f"http://127.0.0.1:{port}", port
    assert stop_server(proc) is not None
    with pytest.raises(ConnectionRefusedError):  # stopped by its PID: nothing answers any more
        socket.create_connection(("127.0.0.1", port), timeout=5)


def post(base: str, data: bytes, content_type: str = "application/json", timeout: float = 120) -> requests.Response:
    return requests.post(f"{base}/invocations", data=data, headers={"Content-Type": content_type}, timeout=timeout)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_the_limits_are_checked_without_a_model():
    rows = parse_body(body(GOOD, {"prompt": "jump", "ref_motion": ref_rows(5)}), "application/json")
    assert [(r.prompt, r.frames, r.seed) for r in rows] == [("a person walks forward", 24, 3), ("jump", 100, 0)]
    assert rows[1].ref_motion.shape == (5, 276) and rows[1].ref_motion.dtype == np.float32
    split = json.dumps({"dataframe_split": {"columns": ["prompt", "frames"], "data": [["walk", 30], ["run", 40]]}})
    assert [r.frames for r in parse_body(split.encode(), "application/json; charset=utf-8")] == [30, 40]
    assert len(BAD_REQUESTS) >= 30 and len({what for what, *_ in BAD_REQUESTS}) == len(BAD_REQUESTS)
    for what, data, content_type, status, reason in BAD_REQUESTS:
        if what == "trajectory not an object":  # a constraint the control parser names, past these limits
            continue
        with pytest.raises(RequestError) as refused:
            parse_body(data, content_type)
        assert (refused.value.status, "\n" in str(refused.value)) == (status, False), what
        assert reason in str(refused.value), (what, str(refused.value))
    small = RequestLimits(max_rows=2, max_prompt_chars=10)
    with pytest.raises(RequestError, match="3 rows; the limit is 2"):
        check_rows([GOOD] * 3, small)
    with pytest.raises(RequestError, match="22 characters; the limit is 10"):
        check_rows([GOOD], small)


def test_the_pyfunc_enforces_the_same_limits(checkpoint):
    """What `mlflow models serve` calls: MLflow's 400 with the same one-line reason."""
    from mlflow.exceptions import MlflowException

    from orchestration.pyfunc_model import VimogenPyfunc
    from vimogen_core.train.generate import load_generator

    served = VimogenPyfunc()
    served.generator, served.steps, served.cfg_scale = load_generator(checkpoint), 2, None
    out = served.predict(None, pd.DataFrame([GOOD]))
    assert out["frames"].tolist() == [24] and np.asarray(json.loads(out["joints"][0])).shape == (24, 22, 3)
    for frame, reason in ((pd.DataFrame([GOOD] * 17), "17 rows; the limit is 16"),
                          (pd.DataFrame([GOOD | {"prompt": "x" * 5000}]), "5000 characters"),
                          (pd.DataFrame([GOOD | {"frames": 5000}]), "frame count 5000"),
                          (pd.DataFrame([GOOD | {"ref_motion": ref_rows(3, value="NaN")}]), "non-finite"),
                          (pd.DataFrame([GOOD | {"keyframes": '{"frames": [[[[[[[1]]]]]]]}'}]), "nested deeper"),
                          (pd.DataFrame([GOOD | {"colour": "red"}]), "unknown column(s) colour")):
        with pytest.raises(MlflowException, match=reason.replace("(", r"\(").replace(")", r"\)")) as refused:
            served.predict(None, frame)
        assert refused.value.get_http_status_code() == 400 and "\n" not in refused.value.message


@pytest.mark.slow
def test_every_bad_request_gets_a_reason_and_the_server_keeps_answering(server):
    proc, base, port = server
    pid = proc.pid
    expected = post(base, row())
    assert expected.status_code == 200, expected.text
    motion = expected.json()["predictions"][0]
    assert motion["frames"] == 24 and np.asarray(json.loads(motion["features"])).shape == (24, 276)
    for what, data, content_type, status, reason in BAD_REQUESTS:
        reply = post(base, data, content_type)
        assert reply.status_code == status, (what, reply.status_code, reply.text[:300])
        message = reply.json()["message"]
        assert reason in message and len(message) < 400, (what, message)
        assert post(base, row()).json() == expected.json(), f"after {what}"
        assert proc.poll() is None, f"the server died on {what}"
    assert requests.get(f"{base}/invocations", timeout=10).status_code == 405
    assert requests.get(f"{base}/nowhere", timeout=10).status_code == 404

    # HTTP-level abuse: a Content-Length past every limit, and a client that stops sending
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10**12))
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 413 and "limit" in json.loads(reply.read())["message"]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "200")
    conn.endheaders()
    conn.send(row()[:20])  # and then nothing
    reply = conn.getresponse()
    assert reply.status == 408 and "did not arrive within" in json.loads(reply.read())["message"]
    conn.close()
    assert post(base, row()).json() == expected.json()
    assert proc.poll() is None and proc.pid == pid  # the same process answered everything
    assert rss_kib(pid, "VmHWM") < 1_000_000  # the 10 MB and 10,000-row bodies never piled up


@pytest.mark.slow
def test_concurrent_clients_get_answers_or_503_and_seeds_hold(server):
    proc, base, _ = server
    lone = {seed: post(base, row(seed=seed)).json() for seed in (0, 1, 2)}
    assert lone[0] != lone[1]
    idle = rss_kib(proc.pid, "VmRSS")
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # the peak from here on
    statuses, mismatches = [], []
    deadline = time.monotonic() + 4

    def client(k: int) -> None:
        with requests.Session() as session:
            for n in range(200):  # bounded by count and by time
                if time.monotonic() > deadline:
                    return
                seed = (k + n) % 3
                reply = session.post(f"{base}/invocations", data=row(seed=seed),
                                     headers={"Content-Type": "application/json"}, timeout=120)
                statuses.append(reply.status_code)
                if reply.status_code == 200 and reply.json() != lone[seed]:
                    mismatches.append(seed)
                elif reply.status_code == 503:
                    assert reply.headers["Retry-After"] == "1" and "busy" in reply.json()["message"]

    clients = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(180)
    assert set(statuses) <= {200, 503} and statuses.count(200) > 0, sorted(set(statuses))
    assert 503 in statuses  # eight clients against one worker and two queue places: the queue did fill
    assert mismatches == []
    assert rss_kib(proc.pid, "VmHWM") < 2 * idle, (idle, rss_kib(proc.pid, "VmHWM"))


def test_the_playground_refuses_the_same_bad_input(checkpoint, tmp_path):
    """The page's Generate handler, without a browser: each bad input is one status line before any
    model work, and a good click after it still makes the same motion."""
    from playground.app import LoadedModel, answer_generate, check_request
    from vimogen_core.train.generate import load_generator

    loaded = LoadedModel(load_generator(checkpoint), 2, "test")
    calls = []
    loaded.generator.model.register_forward_hook(lambda *args: calls.append(1))
    good = ("a person walks forward", 1.2, 2, 3)
    first = answer_generate(loaded, tmp_path, *good)
    assert "Generated **24 frames**" in first[3]
    expected = np.load(first[2])
    bad_inputs = [
        (("walk " * 20_000, 1.2, 2, 3), "100000 characters"), ((42, 1.2, 2, 3), "prompt must be text"),
        ((["walk"], 1.2, 2, 3), "prompt must be text"), (("   ", 1.2, 2, 3), "prompt is empty"),
        (("a \udcff walk", 1.2, 2, 3), "not valid Unicode"), (("walk", float("nan"), 2, 3), "number of seconds"),
        (("walk", float("inf"), 2, 3), "number of seconds"), (("walk", -3, 2, 3), "duration must be between"),
        (("walk", 1e308, 2, 3), "duration must be between"), (("walk", "3", 2, 3), "number of seconds"),
        (("walk", None, 2, 3), "number of seconds"), (("walk", 1.2, 0, 3), "steps must be between"),
        (("walk", 1.2, 10**9, 3), "steps must be between"), (("walk", 1.2, 2.5, 3), "steps must be a whole"),
        (("walk", 1.2, "2", 3), "steps must be a whole"), (("walk", 1.2, 2, -1), "seed must be between"),
        (("walk", 1.2, 2, 2**70), "seed must be between"), (("walk", 1.2, 2, float("nan")), "seed must be a whole"),
        (("walk", 1.2, 2, True), "seed must be a whole"),
    ]
    for args, reason in bad_inputs:
        with pytest.raises(RequestError, match=reason):
            check_request(*args)
        before = len(calls)
        glb, files, features, status = answer_generate(loaded, tmp_path, *args)
        assert (glb, files, features) == (None, None, None) and status.startswith("**Error:**") and reason in status
        assert "\n" not in status and len(calls) == before  # refused before the network ran
    again = answer_generate(loaded, tmp_path, *good)
    assert np.array_equal(np.load(again[2]), expected)
