"""``osrkit serve`` fuzzed against its own OpenAPI schema with Schemathesis (issue 22):
generated requests, valid and invalid, to every route of the real server on loopback;
no 5xx, and every status, content type and body as the schema says. Bounded in examples
and time; an integration test (``make test-integration``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osrkit.perf.serve_load import start_server, stop_server

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


@pytest.mark.integration
def test_schemathesis_finds_no_5xx_and_no_response_off_the_schema(fitted, tmp_path):
    folder = fitted.save_pretrained(tmp_path / "model")
    log_path = tmp_path / "serve.log"  # a file: a full pipe would block the server
    proc, url = start_server(folder, log_path=log_path)
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    cmd = [
        cli,
        "run",
        f"{url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "60",
        "--max-time",
        "120",
        "--seed",
        "22",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report-dir",
        str(tmp_path / "reports"),
    ]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        code, _ = stop_server(proc)
    log = log_path.read_text()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert code == 0 and "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]
