"""The GPU run in one call: its steps in order, each in its own process under its own time limit,
all under one deadline, with the results written after every step (what bench/device_run.sh runs).

    bench/device_run.sh "$OUT" --budget-s 480             # on the lent GPU machine, .device carried
    bench/device_run.sh /tmp/dry --cpu-dry-run            # every step on CPU at tiny sizes (the CI test)
    bench/device_run.sh "$OUT" --steps squad,profile      # some steps only

Standard library only: it runs before the bundle's wheels are installed, on any Python with
torch. ``setup`` checks the bundle (``make device-bundle``: every file against its sha256),
installs its wheels into a temporary site folder and unpacks its data (a problem there is
recorded, and the steps that do not need the broken part still run); then each step of
:data:`STEPS` runs as ``python -m bench.device_steps STEP CONTEXT.json`` with that folder and
the repository on ``PYTHONPATH``, its output streamed into ``OUT/log.txt``.

Time: a step runs only if its estimate fits the time left before the deadline (``--budget-s``
from the start); else it is recorded as skipped, with the reason. Its limit is the time left less
the estimates of the required steps after it (GAP, the last, is optional), at least its own
estimate; optional work inside a step (the throughput step's torch.compile rows) only uses what
leaves every later step its estimate. A step past its limit is stopped (SIGTERM to its process group, SIGKILL 10 s
later) and recorded as ``timeout``, with whatever it had recorded so far.

After every step ``OUT/summary.json`` (all steps so far: status ok / failed / timeout / skipped,
wall time, limit, figures), ``OUT/summary.md`` and a line of ``OUT/log.txt`` are rewritten, so a
run cut short, even by a SIGKILL of this process, returns everything finished before the cut.
Steps write at most a few more files into OUT (the profile trace, the SQuAD predictions), all at
its top level: at most 8 files in all, what a device call brings back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.children import run_group

REPO = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
# Every file of OUT (flat: a device call brings back 8 files at most, 2 folders deep).
SUMMARY_JSON, SUMMARY_MD, LOG = "summary.json", "summary.md", "log.txt"
SQUAD_PREDICTIONS, PROFILE_TRACE = "squad_predictions.json", "profile_trace.json.gz"  # written by their steps
OUT_FILES = (SUMMARY_JSON, SUMMARY_MD, LOG, SQUAD_PREDICTIONS, PROFILE_TRACE)
MAX_OUT_FILES = 8
MARGIN_S = 5.0  # kept back from every limit for the summary and the stop


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    estimate_s: float  # on an H100 (docs/benchmarks/gpu.md has the arithmetic)
    dry_run_estimate_s: float  # on a 2-core CPU at the dry run's tiny sizes
    optional: bool = False  # runs only on time left over: no earlier step's limit is cut for it

    def estimate(self, dry_run: bool) -> float:
        return self.dry_run_estimate_s if dry_run else self.estimate_s


STEPS = (
    Step("environment", "GPU, driver, torch / CUDA / NCCL versions, the measured bf16 matmul peak", 20, 15),
    Step("throughput", "our loop at seq 384: MiniLM and BERT-base size, fp16 / bf16, torch.compile", 45, 40),
    Step("squad", "SQuAD v1.1: prep of all of train and dev, 2-epoch fp16 fine-tune, EM / F1 on dev", 180, 45),
    Step("profile", "torch.profiler step split and trace of steady-state fp16 steps", 40, 30),
    Step("gap", "GAP: 2 epochs, one seed, gap-test F1 / bias / log loss", 60, 35, optional=True),
)
STEP_NAMES = tuple(step.name for step in STEPS)


def write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Run:
    """The summary of one run: steps in order, rewritten to OUT after each."""

    def __init__(self, out: Path, args: argparse.Namespace, started: float):
        self.out, self.started = out, started
        self.deadline = started + args.budget_s
        self.steps: list[dict] = []
        self.header = {
            "schema_version": SCHEMA_VERSION, "mode": "cpu-dry-run" if args.cpu_dry_run else "gpu",
            "budget_s": args.budget_s, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": sys.version.split()[0], "python_executable": sys.executable,
            "cpus": os.cpu_count(), "bundle": str(args.bundle), "command": " ".join(sys.argv),
        }

    def left_s(self) -> float:
        return self.deadline - time.time() - MARGIN_S

    def log(self, line: str) -> None:
        with open(self.out / LOG, "a", encoding="utf-8") as handle:
            handle.write(f"[{time.time() - self.started:7.1f} s] {line}\n")

    def add(self, record: dict) -> None:
        self.steps.append(record)
        payload = {**self.header, "elapsed_s": round(time.time() - self.started, 1), "steps": self.steps,
                   "out_files": sorted(p.name for p in self.out.iterdir() if p.is_file() and not p.name.endswith(".tmp"))}
        write_json_atomic(self.out / SUMMARY_JSON, payload)
        (self.out / SUMMARY_MD).write_text(render_markdown(payload), encoding="utf-8")
        extra = record.get("reason") or record.get("error") or ""
        limit = f" (limit {record['limit_s']} s)" if "limit_s" in record else ""
        self.log(f"{record['name']}: {record['status']} in {record['wall_s']} s{limit}" + (f": {extra[-300:]}" if extra else ""))


def render_markdown(summary: dict) -> str:
    lines = [f"# bertflow GPU run ({summary['mode']}), {summary['started']}", "",
             f"{summary['host']}, Python {summary['python']}, {summary['cpus']} CPUs; budget {summary['budget_s']} s, "
             f"{summary['elapsed_s']} s so far", "", "| step | status | wall s | limit s | note |", "|---|---|---|---|---|"]
    for step in summary["steps"]:
        note = (step.get("reason") or step.get("error") or "").replace("\n", " ").replace("|", "/")[-200:]
        lines.append(f"| {step['name']} | {step['status']} | {step['wall_s']} | {step.get('limit_s', '')} | {note} |")
    for step in summary["steps"]:
        section = (step.get("figures") or {}).get("markdown")
        if section:
            lines += ["", f"## {step['name']}", "", *section]
    return "\n".join(lines) + "\n"


def setup(run: Run, bundle: Path, work: Path, python: str) -> tuple[dict, list[str]]:
    """Check the bundle, install its wheels into ``work/site``, unpack its data into ``work/data``.

    Returns what the steps need and the problems found. A problem does not stop the run: the steps
    that do not need the broken part (a wheel: only prep does) still measure what they can."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    problems = [f"{entry['path']}: missing or changed since make device-bundle" for entry in manifest["files"]
                if not (bundle / entry["path"]).is_file() or sha256_file(bundle / entry["path"]) != entry["sha256"]]
    site = work / "site"
    wheels = [str(bundle / wheel["file"]) for wheel in manifest["wheels"]]
    command = [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--target", str(site), *wheels]
    done = subprocess.run(command, capture_output=True, text=True, timeout=max(run.left_s(), 1),
                          env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    if done.returncode != 0:
        problems.append(f"pip could not install the bundle's wheels: {done.stderr[-1500:]}")
    data = {}
    for key, entry in manifest["data"].items():
        target = work / "data" / entry["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with lzma.open(bundle / entry["file"]) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        except (OSError, lzma.LZMAError) as err:
            problems.append(f"{entry['file']}: cannot be unpacked ({err})")
        data[key] = str(target)
    return {"site": str(site), "data": data, "model_dir": str(bundle / manifest["model"]["folder"]),
            "wheels": [f"{w['name']}=={w['version']}" for w in manifest["wheels"]],
            "bundle_bytes": manifest["total_bytes"], "bundle_created": manifest["created"],
            "data_subsets": {key: entry["subset"] for key, entry in manifest["data"].items() if entry.get("subset")}
            }, problems


def run_step(run: Run, step: Step, args: argparse.Namespace, prepared: dict, work: Path, later: list[Step]) -> dict:
    """One step in its own process; its record (status, times, what it recorded).

    Its limit leaves the later required steps their estimates; its share (what its optional work,
    the compiled throughput rows, may use) leaves every later step its estimate."""
    estimate = step.estimate(args.cpu_dry_run)
    left = run.left_s()
    record = {"name": step.name, "what": step.what, "estimate_s": estimate}
    if estimate > left:
        return {**record, "status": "skipped", "wall_s": 0.0,
                "reason": f"estimated {estimate:.0f} s, {max(left, 0):.0f} s left before the deadline"}
    required_later = sum(s.estimate(args.cpu_dry_run) for s in later if not s.optional)
    limit = args.step_timeout_s.get(step.name, min(left, max(estimate, left - required_later)))
    share = min(limit, max(estimate, left - sum(s.estimate(args.cpu_dry_run) for s in later)))
    record_file = work / "records" / f"{step.name}.json"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    context = {
        "step": step.name, "dry_run": args.cpu_dry_run, "out_dir": str(run.out), "work_dir": str(work / step.name),
        "model_dir": prepared["model_dir"], "data": prepared["data"], "record_file": str(record_file),
        "step_deadline": time.time() + limit, "share_deadline": time.time() + share, "nproc": args.nproc,
        "earlier": {s["name"]: s.get("figures") or {} for s in run.steps if s["status"] == "ok"},
    }
    context_file = work / "records" / f"{step.name}.context.json"
    write_json_atomic(context_file, context)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([prepared["site"], str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run.log(f"{step.name}: starting ({step.what}); estimate {estimate:.0f} s, limit {limit:.0f} s")
    started = time.time()
    with open(run.out / LOG, "ab") as log:
        code = run_group([sys.executable, "-m", "bench.device_steps", step.name, str(context_file)], limit, log, env)
    figures = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    record.update(wall_s=round(time.time() - started, 1), limit_s=round(limit, 1), figures=figures)
    if code == 0:
        record["status"] = "ok"
    elif code is None:
        record.update(status="timeout", reason=f"stopped at its limit of {limit:.0f} s; figures are what it "
                                               "recorded before that")
    else:
        record.update(status="failed", reason=f"exit code {code}; {figures.get('error') or 'see log.txt'}")
    return record


def parse_step_timeouts(values: list[str]) -> dict[str, float]:
    limits = {}
    for value in values:
        name, _, seconds = value.partition("=")
        if name not in STEP_NAMES or not seconds:
            raise argparse.ArgumentTypeError(f"--step-timeout-s takes STEP=SECONDS with STEP one of {STEP_NAMES}")
        limits[name] = float(seconds)
    return limits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/device_run.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="results folder (flat: at most 8 files)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole run's deadline, from its start")
    parser.add_argument("--cpu-dry-run", action="store_true", help="every step on CPU at tiny sizes")
    parser.add_argument("--bundle", type=Path, default=REPO / ".device", help="what make device-bundle built")
    parser.add_argument("--steps", default=",".join(STEP_NAMES), help=f"comma-separated, of {', '.join(STEP_NAMES)}")
    parser.add_argument("--nproc", type=int, default=None, help="prep workers (default: every CPU; 1 in a dry run)")
    parser.add_argument("--step-timeout-s", action="append", default=[], metavar="STEP=S",
                        help="tests: this step's limit instead of the computed one")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = build_parser().parse_args(argv)
    try:
        args.step_timeout_s = parse_step_timeouts(args.step_timeout_s)
        chosen = [name for name in args.steps.split(",") if name]
        unknown = sorted(set(chosen) - set(STEP_NAMES))
        if unknown:
            raise argparse.ArgumentTypeError(f"--steps: unknown {unknown}; the steps are {', '.join(STEP_NAMES)}")
    except argparse.ArgumentTypeError as err:
        build_parser().error(str(err))
    if args.nproc is None:
        args.nproc = 1 if args.cpu_dry_run else (os.cpu_count() or 1)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in OUT_FILES:  # an earlier run's, which this run may not rewrite
        (out / stale).unlink(missing_ok=True)
    run = Run(out, args, started)
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="bertflow-device-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run.log(f"bench/device_run.sh: {run.header['mode']}, budget {args.budget_s:.0f} s, steps {chosen}, work {work}")
        try:
            prepared, problems = setup(run, args.bundle.resolve(), work, sys.executable)
        except Exception as err:  # noqa: BLE001 - recorded: without its manifest no step can run
            run.add({"name": "setup", "status": "failed", "wall_s": round(time.time() - started, 1),
                     "error": f"{type(err).__name__}: {err}"})
            return 1
        run.add({"name": "setup", "status": "failed" if problems else "ok", "wall_s": round(time.time() - started, 1),
                 **({"error": "; ".join(problems)} if problems else {}),
                 "figures": {key: prepared[key] for key in ("wheels", "bundle_bytes", "bundle_created", "data_subsets")}})
        steps = [step for step in STEPS if step.name in chosen]
        for i, step in enumerate(steps):
            run.add(run_step(run, step, args, prepared, work, steps[i + 1:]))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    files = [p for p in out.iterdir()]
    if len(files) > MAX_OUT_FILES or any(p.is_dir() for p in files):
        run.log(f"warning: OUT holds {len(files)} entries ({sorted(p.name for p in files)}); a device call "
                f"brings back {MAX_OUT_FILES} files at most")
    statuses = {step["name"]: step["status"] for step in run.steps}
    run.log(f"done in {time.time() - started:.0f} s: {statuses}")
    return 0 if all(status in ("ok", "skipped") for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
