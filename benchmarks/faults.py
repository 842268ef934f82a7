"""Fault table (issue 22): kill -9 `osrkit train` and `osrkit run` at each stage, rerun the
same command, and compare with an uninterrupted run.

For every stage it records: whether the kill landed in that stage, what the killed process
left, whether the rerun succeeded, whether its results are bit-identical to an
uninterrupted run's (the model's config.json, which holds the SHA-256 of every weight
file and the thresholds; metrics.json without its timings), whether any debris is left
(``.staging-*``, ``.partial``, ``.tmp``, ``.old``, checkpoints) and whether anything was
written outside --out and its documented checkpoint folder (each run gets its own empty
HOME and TMPDIR, which are listed too).

Stages are hit by watching, never by hooks in the library: the dataset file open in
/proc/PID/fd (data load), the -v log lines (epochs, scorer fitting) and the files that
appear (the model's ``.partial`` folder while saving, the staged model/plots while
evaluating and writing the report).

    python benchmarks/faults.py                 # every stage of both commands
    python benchmarks/faults.py --only run      # scenarios whose name starts with "run"

Writes benchmarks/results/faults.json and faults.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
# A small quick configuration: MNIST subsampled, 2 classifier epochs, 1 autoencoder epoch.
COMMON = [
    *("--data-root", str(DATA), "--max-train", "1200", "--val-size", "200", "--epochs", "2"),
    *("--ae-epochs", "1", "--seed", "0"),
]
RUN_EXTRA = [
    *("--known", "mnist:test", "--unknown", "fashion-mnist", "--max-known", "200"),
    *("--max-unknown", "200", "--embed-samples", "100"),
]
DEBRIS = re.compile(r"^\.staging-|\.partial$|\.tmp$|\.old$|^checkpoints$|\.checkpoints$")
POLL_S = 0.005  # short enough to land inside the model's save
TIMEOUT_S = 900


@dataclass
class Scenario:
    name: str
    command: str  # "run" or "train"
    stage: str
    trigger: Callable[[Path, str, int], bool] | None = field(default=None, repr=False)


def _log(pattern: str) -> Callable[[Path, str, int], bool]:
    return lambda root, log, pid: re.search(pattern, log) is not None


def _appears(pattern: str) -> Callable[[Path, str, int], bool]:
    return lambda root, log, pid: next(root.glob(pattern), None) is not None


def _opened(fragment: str) -> Callable[[Path, str, int], bool]:
    def check(root: Path, log: str, pid: int) -> bool:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if fragment in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return True
            except OSError:
                continue
        return False

    return check


def scenarios() -> list[Scenario]:
    """The kill points, in the order a command reaches them. An epoch's log line comes just
    before its checkpoint is written, so a kill on that line lands at the epoch's end,
    before or while it is checkpointed; "mid-epoch2" waits for epoch 1's checkpoint file."""
    out = []
    for command, target in (("train", "model"), ("run", "run")):
        staging = f"{target}/.staging-*" if command == "run" else None
        ckpt = "model.checkpoints" if command == "train" else "run/checkpoints"
        out += [
            Scenario(f"{command}/none", command, "none (uninterrupted rerun: the control)"),
            Scenario(f"{command}/data", command, "data load (dataset file open)", _opened("MNIST/raw")),
            Scenario(
                f"{command}/epoch1",
                command,
                "classifier epoch 1 (training started)",
                _log(r"validation split"),
            ),
            Scenario(
                f"{command}/epoch2",
                command,
                "end of classifier epoch 1 (logged, checkpoint being written)",
                _log(r"classifier epoch 1/"),
            ),
            Scenario(
                f"{command}/mid-epoch2",
                command,
                "classifier epoch 2 (epoch 1's checkpoint on disk)",
                _appears(f"{ckpt}/classifier.pt"),
            ),
            Scenario(
                f"{command}/ae-epoch1",
                command,
                "end of classifier epoch 2 (logged, checkpoint being written)",
                _log(r"classifier epoch 2/"),
            ),
            Scenario(
                f"{command}/scorers",
                command,
                "end of autoencoder epoch 1, then scorer fitting",
                _log(r"autoencoder epoch 1/"),
            ),
        ]
        if command == "train":
            out.append(
                Scenario(
                    "train/saving",
                    command,
                    "saving the model (.partial present)",
                    _appears(".model.*.partial"),
                )
            )
        else:
            out += [
                Scenario(
                    "run/saving",
                    command,
                    "saving the model (.partial present)",
                    _appears(f"{staging}/.model.*.partial"),
                ),
                Scenario("run/evaluate", command, "evaluating (model staged)", _appears(f"{staging}/model")),
                Scenario(
                    "run/report", command, "plots and report (plots/ staged)", _appears(f"{staging}/plots")
                ),
            ]
    return out


def argv(command: str, root: Path) -> list[str]:
    target = root / ("run" if command == "run" else "model")
    extra = RUN_EXTRA if command == "run" else []
    return [sys.executable, "-m", "osrkit", "-v", "-q", command, "--out", str(target), *COMMON, *extra]


def env(root: Path) -> dict[str, str]:
    for sub in ("home", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return os.environ | {"HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), "PYTHONUNBUFFERED": "1"}


def launch(command: str, root: Path, trigger=None) -> dict:
    """Run the command; with ``trigger``, SIGKILL it as soon as the trigger fires."""
    root.mkdir(parents=True, exist_ok=True)
    log_path = root.parent / f"{root.name}.{command}.{time.monotonic_ns()}.log"  # beside, not inside
    t0 = time.perf_counter()
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(argv(command, root), stdout=log_file, stderr=subprocess.STDOUT, env=env(root))
        fired = None
        while proc.poll() is None and time.perf_counter() - t0 < TIMEOUT_S:
            if trigger is not None and trigger(root, log_path.read_text(), proc.pid):
                os.kill(proc.pid, signal.SIGKILL)
                fired = round(time.perf_counter() - t0, 2)
                break
            time.sleep(POLL_S if trigger is not None else 0.2)
        code = proc.wait(timeout=TIMEOUT_S)
    text = log_path.read_text()
    log_path.unlink()
    return {"code": code, "killed_at_s": fired, "seconds": round(time.perf_counter() - t0, 1), "log": text}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def results_of(command: str, root: Path) -> dict:
    """The comparable results: the model's config.json (weights' SHA-256, thresholds) and,
    for a run, metrics.json without its timings."""
    model = root / ("run/model" if command == "run" else "model")
    out = {"config": json.loads((model / "config.json").read_text())}
    if command == "run":
        metrics = json.loads((root / "run" / "metrics.json").read_text())
        metrics.pop("timing_s", None)
        out["metrics"] = metrics
    return out


def debris(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if DEBRIS.search(p.name) and p.relative_to(root).parts[0] not in ("home", "tmp")
    )


# matplotlib's own font cache, built once per HOME (each run here starts with an empty
# one); reported in a note, not per row
MPL_CACHE = re.compile(r"^home/\.cache/matplotlib/fontlist-[^/]+\.json$")


def outside(command: str, root: Path) -> list[str]:
    """What was written outside --out (and the checkpoint folder), HOME and TMPDIR included."""
    allowed = {"run"} if command == "run" else {"model", "model.checkpoints"}
    top = [p.name for p in root.iterdir() if p.name not in allowed | {"home", "tmp"}]
    inside = [f"{d}/{f}" for d in ("home", "tmp") for f in _files(root / d)]
    return sorted(top + [f for f in inside if not MPL_CACHE.match(f)])


def measure(s: Scenario, workdir: Path, baseline: dict) -> dict:
    root = workdir / s.name.replace("/", "-")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    row: dict = {"scenario": s.name, "stage": s.stage}
    if s.trigger is not None:
        first = launch(s.command, root, s.trigger)
        row |= {"killed_at_s": first["killed_at_s"], "first_exit": first["code"]}
        row["hit"] = first["killed_at_s"] is not None and first["code"] == -signal.SIGKILL
        row["left_by_kill"] = debris(root)
    second = launch(s.command, root)
    row |= {"rerun_exit": second["code"], "rerun_s": second["seconds"]}
    row["resumed"] = "resuming from checkpoint" in second["log"]
    if second["code"] != 0:
        row["error"] = second["log"].strip().splitlines()[-1:]
        row["identical"] = False
    else:
        row["identical"] = results_of(s.command, root) == baseline[s.command]
    row["debris_after_rerun"] = debris(root)
    row["outside_out"] = outside(s.command, root)
    return row


def render(rows: list[dict], commands: dict[str, str]) -> str:
    lines = [
        "| scenario | kill -9 during | killed at (s) | left by the kill | rerun | resumed | "
        "bit-identical | debris after rerun | written outside --out |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        killed = "-" if "hit" not in r else (f"{r['killed_at_s']}" if r["hit"] else "missed (ran to the end)")
        lines.append(
            f"| {r['scenario']} | {r['stage']} | {killed} | {', '.join(r.get('left_by_kill', [])) or '-'} | "
            f"exit {r['rerun_exit']} ({r['rerun_s']} s) | {'yes' if r['resumed'] else 'no'} | "
            f"{'yes' if r['identical'] else '**no**'} | {', '.join(r['debris_after_rerun']) or 'none'} | "
            f"{', '.join(r['outside_out']) or 'nothing'} |"
        )
    cmd = "\n".join(f"    osrkit {' '.join(c)}" for c in commands.values())
    note = (
        "Each run starts with an empty HOME and TMPDIR. matplotlib builds its own font cache in "
        "HOME/.cache/matplotlib/fontlist-*.json once per HOME; that file is left out of the last "
        "column, which lists everything else written outside --out and its checkpoint folder."
    )
    return "\n".join(lines) + f"\n\n{note}\n\nCommands (each in its own folder, HOME and TMPDIR):\n\n{cmd}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="scenarios whose name starts with one of these (comma-separated)"
    )
    parser.add_argument("--workdir", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--render", action="store_true", help="rewrite faults.md from faults.json")
    parser.add_argument("--append", action="store_true", help="add to (or replace in) faults.json's rows")
    args = parser.parse_args()
    order = {s.name: i for i, s in enumerate(scenarios())}
    if args.render:
        report = json.loads((RESULTS / "faults.json").read_text())
        stages = {s.name: s.stage for s in scenarios()}
        rows = sorted(report["rows"], key=lambda r: order.get(r["scenario"], len(order)))
        for r in rows:
            r["stage"] = stages.get(r["scenario"], r["stage"])
        (RESULTS / "faults.json").write_text(json.dumps(report | {"rows": rows}, indent=2) + "\n")
        md = render(rows, report["commands"])
        (RESULTS / "faults.md").write_text(md)
        print(md)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="osrkit-faults-"))
    chosen = [s for s in scenarios() if s.name.startswith(tuple(args.only.split(",")))]
    commands = {c: argv(c, Path("DIR"))[3:] for c in sorted({s.command for s in chosen})}
    baseline = {}
    for command in commands:  # the uninterrupted runs everything is compared with
        root = workdir / f"baseline-{command}"
        if args.append and not debris(root):  # the same workdir's finished baseline
            try:
                baseline[command] = results_of(command, root)
                continue
            except (OSError, ValueError):
                pass
        shutil.rmtree(root, ignore_errors=True)
        result = launch(command, root)
        if result["code"] != 0:
            sys.exit(f"the uninterrupted {command} failed:\n{result['log'][-2000:]}")
        baseline[command] = results_of(command, root)
        print(f"baseline {command}: {result['seconds']} s", flush=True)
    rows = []
    if args.append and (RESULTS / "faults.json").is_file():
        done = {s.name for s in chosen}
        rows = [
            r for r in json.loads((RESULTS / "faults.json").read_text())["rows"] if r["scenario"] not in done
        ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for s in chosen:
        row = measure(s, workdir, baseline)
        rows = sorted([*rows, row], key=lambda r: order.get(r["scenario"], len(order)))
        print(json.dumps(row), flush=True)
        md = render(rows, commands)
        (RESULTS / "faults.md").write_text(md)  # after every scenario: a partial table survives
        report = {"commands": commands, "rows": rows}
        (RESULTS / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
    print(md)
    return 0 if all(r["identical"] and not r["debris_after_rerun"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
