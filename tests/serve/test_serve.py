"""``osrkit serve``: the real server in a child process on a free loopback port, a real
HTTP client, predictions as the Python API gives them, bad requests answered with one
line and the server still serving, clean shutdown."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import socket
import threading
import time
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit.perf.serve_load import _load, floor_request, free_port, predict_request, start_server, stop_server
from osrkit.recognizer.engine import FastPaths
from osrkit.serve import MicroBatcher, ServeOptions
from osrkit.serve.app import PredictFastPath, RequestLog, scoring_threads
from osrkit.serve.images import decode_batch
from osrkit.serve.uploads import RequestError, multipart_files
from osrkit.serve.worker import ProcessWorker, ThreadWorker, WorkerStopped, json_rows, scoring_worker
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import synthetic_digits, synthetic_unknowns
from tests.numerics import assert_decisions_agree, onnx_tol

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory):
    folder = fitted.save_pretrained(tmp_path_factory.mktemp("serve") / "model")
    # as many torch threads as this process: the server then runs the same kernels as
    # ``fitted`` here (another thread count may sum in another order, which bfloat16 on
    # AMX CPUs rounds to other scores), so the scores compared below are of one arithmetic
    proc, url = start_server(folder, "--threads", str(torch.get_num_threads()))
    yield url, folder
    if proc.poll() is None:
        stop_server(proc)


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    digits, _ = synthetic_digits(6, seed=11)
    return [png_bytes(d) for d in digits] + [png_bytes(u) for u in synthetic_unknowns(4, seed=12)]


def test_predict_matches_the_python_api(server, images, fitted):
    url, _ = server
    files = [("files", (f"img{i}.png", data, "image/png")) for i, data in enumerate(images)]
    r = httpx.post(f"{url}/v1/predict", files=files, timeout=30)
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    arrays = [np.asarray(Image.open(io.BytesIO(b))) for b in images]
    expected = fitted.predict(np.stack(arrays))
    assert [row["class_index"] for row in rows] == expected.tolist()
    assert [row["name"] for row in rows] == [f"img{i}.png" for i in range(len(images))]
    scores = fitted.score_all(np.stack(arrays))
    for i, row in enumerate(rows):
        assert set(row) == {
            "name",
            "label",
            "class_index",
            "known",
            "decision",
            "scores",
            "thresholds",
            "margins",
            "decided_by",
        }
        assert row["known"] == (row["class_index"] != -1)
        for name, value in row["scores"].items():
            # the same networks, fast paths, thread count and batch as here (see server)
            assert value == pytest.approx(float(scores[name][i]), rel=1e-6, abs=1e-9)
    assert any(row["known"] for row in rows) and not all(row["known"] for row in rows)


def test_json_base64_body_gives_the_same_predictions(server, images):
    url, _ = server
    body = {"images": [base64.b64encode(b).decode() for b in images[:3]], "names": ["a", "b", "c"]}
    r = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
    files = [("files", (n, data, "image/png")) for n, data in zip("abc", images[:3])]
    r2 = httpx.post(f"{url}/v1/predict", files=files, timeout=30)
    assert r.status_code == r2.status_code == 200
    assert r.json() == r2.json()


def test_model_health_ready_and_openapi(server, fitted):
    url, _ = server
    info = httpx.get(f"{url}/v1/model").json()
    assert info["class_names"] == fitted.class_names_
    assert info["decision_scorer"] == fitted.decision_scorer
    assert info["thresholds"] == pytest.approx(fitted.thresholds_)
    assert info["input_spec"]["height"] == 28 and info["versions"]["osrkit"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    assert "/v1/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"files": [("files", ("x.png", b"not an image", "image/png"))]}, 400, "x.png: not a readable image"),
        ({"files": [("files", ("e.png", b"", "image/png"))]}, 400, "e.png: empty file"),
        ({"content": b""}, 400, "empty request body"),
        ({"files": [("photo", ("x.png", b"abc", "image/png"))]}, 400, "unexpected field 'photo'"),
        (
            {"data": {"files": "text"}, "files": [("files", ("a.png", b"x", "image/png"))]},
            400,
            "field 'files' holds text, not a file",
        ),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"pictures": []}}, 400, '{"images"'),
        ({"json": {"images": ["@@@"]}}, 400, "images[0] is not valid base64"),
        ({"json": {"images": []}}, 400, "no images"),
        (
            {"content": b"x" * (17 * 2**20), "headers": {"content-type": "application/json"}},
            413,
            "over the limit",
        ),
        ({"json": {"images": ["AAAA"] * 65}}, 413, "65 images in one request; at most 64"),
        (
            {"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(65)]},
            413,
            "more than 64 images in one request",
        ),
        (
            {
                "content": b"--xyz\r\nContent-Disposition: form-data; name=files; filename=a.png\r\n\r\nab",
                "headers": {"content-type": "multipart/form-data; boundary=xyz"},
            },
            400,
            "ends before its closing boundary",
        ),
    ],
)
def test_bad_requests_get_one_line_and_the_server_keeps_serving(server, images, kwargs, status, message):
    url, _ = server
    r = httpx.post(f"{url}/v1/predict", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error
    ok = httpx.post(f"{url}/v1/predict", files=[("files", ("d.png", images[0], "image/png"))], timeout=30)
    assert ok.status_code == 200


def multipart(files: list[tuple[str, tuple]], data: dict | None = None) -> tuple[bytes, str]:
    """A multipart body and its content type, as a real client (httpx) encodes them."""
    request = httpx.Request("POST", "http://localhost/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_multipart_files_come_back_in_order_with_their_names_and_bytes():
    payload = b"\x89PNG\r\n--not-the-boundary\r\n" + bytes(range(256))
    files = [("files", ("a.png", b"AAA", "image/png")), ("file", ("b \u00e9.png", payload, "x"))]
    body, kind = multipart(files)
    assert multipart_files(body, kind, 64) == [("a.png", b"AAA"), ("b \u00e9.png", payload)]


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("no boundary", 400, "no boundary in the content type"),
        ("cut short", 400, "ends before its closing boundary"),
        ("not multipart", 400, "malformed multipart body"),
        ("text field", 400, "field 'files' holds text"),
        ("other field", 400, "unexpected field 'photo'"),
        ("too many", 413, "more than 2 images in one request; at most 2 are allowed"),
    ],
)
def test_multipart_problems_are_one_line_request_errors(case, status, message):
    files = [("files", (f"{i}.png", b"x", "image/png")) for i in range(3)]
    body, kind = multipart(files)
    if case == "no boundary":
        kind = "multipart/form-data"
    elif case == "cut short":
        body = body[: len(body) // 2]
    elif case == "not multipart":
        body = b"hello"
    elif case == "text field":
        body, kind = multipart(files[:1], {"files": "text"})
    elif case == "other field":
        body, kind = multipart([("photo", ("p.png", b"x", "image/png"))])
    with pytest.raises(RequestError) as err:
        multipart_files(body, kind, 2)
    assert err.value.status == status and message in str(err.value) and "\n" not in str(err.value)


def test_unknown_routes_and_methods_are_json_errors(server):
    url, _ = server
    assert httpx.get(f"{url}/nope").json() == {"error": "Not Found"}
    r = httpx.get(f"{url}/v1/predict")
    assert r.status_code == 405 and "error" in r.json()


def test_sigterm_lets_requests_in_flight_finish(fitted, tmp_path, images):
    folder = fitted.save_pretrained(tmp_path / "model")
    proc, url = start_server(folder, "--max-wait-ms", "200")
    results = []

    def request():
        files = [("files", ("d.png", images[0], "image/png"))]
        results.append(httpx.post(f"{url}/v1/predict", files=files, timeout=30).status_code)

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.1)  # the request is waiting in the batcher (max wait 200 ms)
    code, err = stop_server(proc)
    thread.join()
    assert results == [200] and code == 0, err
    assert "POST /v1/predict 200 1 image(s)" in err  # one log line per request
    assert f"osrkit: listening on {url} (model {folder}: small_cnn, 10 classes" in err


def test_serve_refuses_a_bad_model_folder_before_binding(tmp_path, capsys):
    code, _, err = run_cli(capsys, "serve", tmp_path / "missing", "--port", free_port())
    assert code == 2
    assert_one_line_error(err, "missing")


def test_serve_refuses_a_port_in_use(fitted, tmp_path, capsys):
    folder = fitted.save_pretrained(tmp_path / "model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", folder, "--port", port)
    assert code == 2
    assert_one_line_error(err, f"port {port} on 127.0.0.1 is in use")


def test_serve_options_are_checked():
    with pytest.raises(Exception, match="unknown backend"):
        ServeOptions(backend="tf")
    with pytest.raises(Exception, match="max-images must be at least 1"):
        ServeOptions(max_images=0)


@pytest.mark.parametrize("wait", [0.0, 0.05])
def test_micro_batcher_scores_concurrent_requests_together_in_order(wait):
    seen = []

    def score(x: np.ndarray) -> list[dict]:
        seen.append(len(x))
        return [{"value": float(v)} for v in x[:, 0, 0, 0]]

    async def main() -> list[list[dict]]:
        batcher = MicroBatcher(score, max_batch=64, max_wait_s=wait)
        await batcher.start()
        requests = [np.full((1 + i % 3, 1, 2, 2), float(i), np.float32) for i in range(20)]
        out = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert sum(seen) == sum(1 + i % 3 for i in range(20)) and len(seen) < 5
    for i, rows in enumerate(out):
        assert [r["value"] for r in rows] == [float(i)] * (1 + i % 3)


def test_micro_batcher_respects_the_batch_size_and_passes_errors_on():
    def score(x: np.ndarray) -> list[dict]:
        if (x < 0).any():
            raise RuntimeError("bad batch")
        return [{}] * len(x)

    async def main():
        batcher = MicroBatcher(score, max_batch=4, max_wait_s=0.05)
        await batcher.start()
        ok = await asyncio.gather(*(batcher.submit(np.zeros((1, 1, 1, 1), np.float32)) for _ in range(10)))
        with pytest.raises(RuntimeError, match="bad batch"):
            await batcher.submit(-np.ones((1, 1, 1, 1), np.float32))
        await batcher.stop()
        return ok, batcher.batches

    ok, batches = asyncio.run(main())
    assert len(ok) == 10 and batches >= 3 + 1  # at most 4 images per batch


def test_onnx_backend_serves_the_same_decisions(fitted, tmp_path, images):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from osrkit.export.onnx import export_onnx

    folder = fitted.save_pretrained(tmp_path / "model")
    export_onnx(fitted, folder / "model.onnx")
    proc, url = start_server(folder, "--backend", "onnx", "--no-batching")
    try:
        files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)]
        rows = httpx.post(f"{url}/v1/predict", files=files, timeout=30).json()["predictions"]
        arrays = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in images])
        # the float32 graph against torch's float32 reference (the fast paths, bfloat16 on
        # AMX CPUs, may decide otherwise near the threshold), where clear of the threshold
        reference = copy.copy(fitted)
        reference.fast_paths = FastPaths.off()
        name = reference.decision_scorer
        scores = reference.score_samples(arrays)
        labels = [r["class_index"] for r in rows]
        rule = (reference.thresholds_[name], onnx_tol(name))
        assert assert_decisions_agree(labels, reference.predict(arrays), scores, *rule) > 0.5
        assert httpx.get(f"{url}/v1/model").json()["backend"] == "onnx"
    finally:
        stop_server(proc)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-request-mb", "nan"], "--max-request-mb: must be in (0, 1024]"),
        (["--max-request-mb", "inf"], "--max-request-mb: must be in (0, 1024]"),
        (["--max-request-mb", "0"], "--max-request-mb: must be in (0, 1024]"),
        (["--max-wait-ms", "-1"], "--max-wait-ms: must be in [0, 1000]"),
    ],
)
def test_bad_serve_numbers_are_one_line(tmp_path, capsys, flags, message):
    """nan and inf once crashed with a traceback after the model had loaded."""
    from osrkit.cli import main

    try:
        code = main(["serve", str(tmp_path / "m"), *flags])
    except SystemExit as exc:  # argparse's own errors exit
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_load_client_and_http_floor_against_the_server(server, images):
    """The load benchmark's asyncio-streams client (httpx's pool, not the server, set the
    pace at concurrency 64) gets 200s from /v1/predict and from the floor, /healthz."""
    url, _ = server
    res = asyncio.run(_load(url, [predict_request(b) for b in images[:4]], 4, 12, 30))
    assert res["errors"] == 0 and res["requests"] == 12 and res["p99_ms"] > 0
    assert 0 < res["client_cpu_share"] <= 1  # the client did some work, and at most all of one core
    floor = asyncio.run(_load(url, [floor_request()], 4, 40, 30))
    assert floor["errors"] == 0 and floor["requests"] == 40


def test_request_log_is_one_line_per_request_with_status_and_images(caplog):
    """The pure ASGI request log (it replaced Starlette's slower @app.middleware)."""

    async def app(scope, receive, send):
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        scope.setdefault("state", {})["images"] = 3
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(path):
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "state": {}}
        await RequestLog(app)(scope, None, send)
        return sent

    with caplog.at_level("INFO", logger="osrkit.serve"):
        sent = asyncio.run(call("/v1/predict"))
        with pytest.raises(RuntimeError):
            asyncio.run(call("/boom"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("POST /v1/predict 201 3 image(s)") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /boom 500 0 image(s)")


def test_scoring_thread_gets_its_torch_threads():
    before = torch.get_num_threads()
    try:
        assert scoring_threads(ServeOptions(threads=3)) == 3
        with mock.patch("osrkit.serve.app.usable_cores", return_value=4):
            assert scoring_threads(ServeOptions()) == 3  # a core left to the event loop
        with mock.patch("osrkit.serve.app.usable_cores", return_value=1):
            assert scoring_threads(ServeOptions()) == 1

        async def threads_seen_by(worker: ThreadWorker) -> list[int]:
            await worker.start()
            rows = await worker.score(np.zeros((1, 1, 1, 1), np.float32))
            await worker.stop()
            return rows

        torch.set_num_threads(2)
        assert asyncio.run(threads_seen_by(ThreadWorker(lambda x: [torch.get_num_threads()], 1))) == [1]
        with pytest.raises(Exception, match="threads must be 0"):
            ServeOptions(threads=-1)
        with pytest.raises(Exception, match="unknown worker 'gpu'; use process or thread"):
            ServeOptions(worker="gpu")
        with pytest.raises(Exception, match="pass model_dir, or use worker"):
            scoring_worker("process", None, 1, None)
    finally:
        torch.set_num_threads(before)


def test_process_worker_scores_as_the_model_and_reports_its_death(fitted, tmp_path, images):
    """The scoring process gives the rows the model gives in this process; once it is
    gone, scoring raises WorkerStopped (the service answers 503) instead of hanging."""
    folder = fitted.save_pretrained(tmp_path / "model")
    batch = decode_batch([(f"{i}.png", b) for i, b in enumerate(images)], fitted.input_spec_)
    threads = torch.get_num_threads()  # this process's: the same kernels, so the same scores

    async def main():
        worker = ProcessWorker(folder, "torch", "cpu", threads)
        await worker.start()
        # a caller cancelled while its batch is in the process: the next caller still
        # gets its own rows, not the cancelled one's
        cancelled = asyncio.ensure_future(worker.score(batch))
        await asyncio.sleep(0.001)
        cancelled.cancel()
        rows = await worker.score(batch)
        again = await worker.score(batch[:3])
        worker._process.kill()
        with pytest.raises(WorkerStopped):
            await worker.score(batch)
        await worker.stop()
        return rows, again

    rows, again = asyncio.run(main())
    expected = [json.loads(r) for r in json_rows(fitted, batch)]
    got = [json.loads(r) for r in rows]
    assert [r["class_index"] for r in got] == [r["class_index"] for r in expected]
    for g, e in zip(got, expected):
        assert g["scores"] == pytest.approx(e["scores"], rel=1e-6, abs=1e-9)
    # a smaller batch, against this process's rows of the same batch (another batch size
    # may sum in another order, which bfloat16 on AMX CPUs rounds to other scores)
    again = [json.loads(r) for r in again]
    expected = [json.loads(r) for r in json_rows(fitted, batch[:3])]
    assert [r["class_index"] for r in again] == [r["class_index"] for r in expected]
    for a, e in zip(again, expected):
        assert a["scores"] == pytest.approx(e["scores"], rel=1e-6, abs=1e-9)


def test_process_worker_that_cannot_load_the_model_is_one_line(tmp_path):
    async def main():
        await ProcessWorker(tmp_path / "missing", "torch", "cpu", 1).start()

    with pytest.raises(Exception, match="the scoring process could not load the model: .*missing") as err:
        asyncio.run(main())
    assert "\n" not in str(err.value)


def test_load_benchmark_tables_name_each_server_and_read_old_results():
    """Every server of the benchmark gets its rows and targets; results written before
    the backend and worker columns still render."""
    from osrkit.perf.serve_load import SERVERS, render, targets

    def setting(server, c, req_s):
        backend, worker, batching = server
        return {
            "backend": backend,
            "worker": worker,
            "batching": batching,
            "concurrency": c,
            "requests": 100,
            "req_s": req_s,
            "img_s": req_s,
            "p50_ms": 5.0,
            "p99_ms": 8.0 if backend == "onnx" else 12.0,
            "errors": 0,
            "ratio_to_in_process": req_s / 100,
        }

    r = {
        "model": "test",
        "settings": [setting(s, c, 60.0 if s[0] == "onnx" else 40.0) for s in SERVERS for c in (1, 64)],
        "in_process_img_s": {b: {"1": 100.0, "64": 100.0} for b in ("torch", "onnx")},
        "floor": {"64": {"req_s": 1000.0, "p50_ms": 1, "p99_ms": 2, "errors": 0, "client_cpu_share": 0.1}},
    }
    r["targets"] = lines = targets(r)
    assert "serve-c64-batching-fraction-of-batch-64: 0.40 (goal >= 0.5) short" in lines[0]
    assert "serve-c1-p99-latency: 12.00 ms" in lines[1] and "short" in lines[1]
    assert "(--backend onnx): 0.60" in lines[2] and lines[2].endswith("ok")
    assert "serve-c1-p99-latency (--backend onnx): 8.00 ms" in lines[3] and lines[3].endswith("ok")
    table = render(r)
    assert table.count("| onnx | process | on |") == 2 and table.count("| torch | thread | on |") == 2
    # results written before the columns: a scoring thread, torch, one in-process table
    old = {"model": "old", "settings": [setting(SERVERS[0], 64, 40.0)], "in_process_img_s": {"64": 80.0}}
    del old["settings"][0]["backend"], old["settings"][0]["worker"]
    old["targets"] = targets(old)
    assert "| torch | thread | on | 64 | 100 | 40 | 5.00 | 12.00 | 0 | 80 |" in render(old)


def test_predict_fast_path_answers_post_predict_and_passes_the_rest_on():
    seen = []

    async def app(scope, receive, send):
        seen.append(("app", scope.get("method"), scope.get("path")))

    class Answer:
        async def __call__(self, scope, receive, send):
            seen.append(("answer", scope["method"], scope["path"]))

    async def answer(request):
        return Answer()

    async def main():
        fast = PredictFastPath(app, answer)
        for method, path in (("POST", "/v1/predict"), ("GET", "/v1/predict"), ("POST", "/v1/model")):
            await fast({"type": "http", "method": method, "path": path, "headers": []}, None, None)
        await fast({"type": "lifespan"}, None, None)

    asyncio.run(main())
    assert seen == [
        ("answer", "POST", "/v1/predict"),
        ("app", "GET", "/v1/predict"),
        ("app", "POST", "/v1/model"),
        ("app", None, None),
    ]


def test_an_app_whose_scoring_process_cannot_load_fails_in_one_line_before_serving(fitted, tmp_path):
    """create_app launches the worker process and waits for its model (before osrkit
    serve binds the port): a folder it cannot load is one line, not a lifespan traceback."""
    from osrkit.serve import create_app

    with pytest.raises(Exception, match="the scoring process could not load the model") as err:
        create_app(fitted, ServeOptions(), model_dir=tmp_path / "gone")
    assert "\n" not in str(err.value) and "gone" in str(err.value)


def test_serve_says_where_it_listens_in_one_line():
    from osrkit.serve.app import listening_line

    info = {"class_names": ["a", "b", "c"], "backbone": "small_cnn"}
    line = listening_line(ServeOptions(port=8123), info, "runs/m/model")
    assert line.startswith("listening on http://127.0.0.1:8123 (model runs/m/model: small_cnn, 3 classes")
    assert "Ctrl+C to stop" in line and "\n" not in line and "{" not in line
    assert "http://[::1]:80/docs" in listening_line(ServeOptions(host="::1", port=80), info)


def test_check_port_finds_a_free_port_for_port_0():
    from osrkit.serve import check_port

    assert 0 < check_port("127.0.0.1", 0) < 65536
