"""CPU seconds per forwarded token of a whole search, over those of a plain dense forward.

A real `pressroom search` (EvoPress, 2 workers of 1 CPU and 1 torch thread, a local Ray the
search starts itself, SQLite storage) runs in a subprocess while this process samples, every
`--interval` seconds, the CPU time of every process of the search: the driver and everything
below it (Ray's GCS server, raylet, dashboard, monitors, idle workers and the evaluator actors),
keeping the last value seen of each pid so that processes which exit still count. `time` would
miss the actors. Each evaluation's forwarded tokens and its worker's CPU time (the trial
attribute ``cpu_seconds``) come from the study afterwards.

The steady state is the window from the first trial's start to the last trial's end: CPU of all
processes in that window over the tokens the search forwarded. Everything before it (Ray and
the workers starting, the model loading, the compression database) is the start-up column, and
the whole-run ratio counts it and the held-out report after the search too. The reference is the
dense model's forward (logits, or an encoder's hidden states) of the same minibatches at the same
stage sizes, in this process at the same torch thread count: its CPU per token, the median of
`--repeats` runs, weighted by how many tokens the search forwarded at each size. A ratio of 1.0
would be a search that costs nothing but its students' forwards. Each worker also forwards the
dense teacher once on every minibatch (generation, stage) it evaluates: "teacher tokens" counts
those from the study, and "floor with the teacher" = 1 + teacher tokens / tokens is the ratio a
search would have if nothing but forwards cost CPU.

    .venv/bin/python benchmarks/cpu_per_token.py [--models minilm,tiny-llama,smollm2] [--generations N]
        [--interval 0.2] [--repeats 5] [--smoke]

`--smoke` is the smallest setting (the tiny Llama only, one generation of 4 offspring on 128
and 256 tokens), for CI: same path, same table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import psutil
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluators import Evaluator
from search.spec.config import load_spec
from search.storage.study import EVALUATIONS
from spaces import Fidelity

ROOT = Path(__file__).resolve().parent.parent
THREADS = 1
WANDA = {"scheme": "sparsity", "target": 0.6, "compressor": "wanda", "levels": {"max_levels": 5}}
#: Per model: its spec entries and the generations it runs (a few minutes each on a 2-core machine).
MODELS: dict[str, dict[str, Any]] = {
    "minilm": {"model": {"name": "pressroom:minilm"}, "task": "encoder", "seq_len": 128, "generations": 3},
    "tiny-llama": {"model": {"name": "pressroom:tiny-llama"}, "task": "causal-lm", "seq_len": 64, "generations": 10},
    "smollm2": {"model": {"name": "pressroom:smollm2-135m"}, "task": "causal-lm", "seq_len": 128, "generations": 1},
}
#: EvoPress's "cpu-small" stages (16 offspring on 512 tokens, the best 4 and the parent on 2,048).
STAGES = [[4, 512], [1, 2048]]
SMOKE_STAGES = [[2, 128], [1, 256]]
ACTOR_TITLE = "ray::EvaluatorActor"


def spec_for(model: str, generations: int | None, smoke: bool) -> dict[str, Any]:
    entry = MODELS[model]
    params = {
        "generations": 1 if smoke else generations or entry["generations"],
        "offspring": 4 if smoke else 16,
        "stages": SMOKE_STAGES if smoke else STAGES,
        "init_samples": 2 if smoke else 4,
        "init_tokens": 128 if smoke else 512,
    }
    return {
        "model": entry["model"],
        "task": entry["task"],
        "compression": WANDA,
        "data": {"seq_len": entry["seq_len"], "calibration_tokens": 4096, "heldout_tokens": 256, "stats_tokens": 512},
        "algorithm": {"name": "evopress", "params": params},
        "workers": {"count": 2, "cpus_per_worker": 1, "torch_threads": THREADS},
        "mlflow": {"enabled": False},
        "study": f"cpu-{model}",
        "seed": 0,
    }


class TreeSampler(threading.Thread):
    """Samples the CPU time of a process and all its descendants until it exits.

    `samples` holds (time, {pid: CPU seconds}) with every pid seen so far at its last value;
    `actors` the pids that ever ran an evaluator actor (Ray titles them ``ray::EvaluatorActor...``).
    """

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.actors: set[int] = set()
        self._last: dict[int, float] = {}

    def sample(self) -> bool:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        for proc in procs:
            try:
                times = proc.cpu_times()
                title = proc.cmdline()[:1]
            except psutil.Error:  # gone, or not ours to read, since it was listed
                continue
            self._last[proc.pid] = times.user + times.system
            if title and title[0].startswith(ACTOR_TITLE):
                self.actors.add(proc.pid)
        self.samples.append((time.time(), dict(self._last)))
        return True

    def run(self) -> None:
        while self.sample():
            time.sleep(self.interval)

    def groups(self, index: int) -> dict[str, float]:
        """CPU seconds by group (driver, actors, Ray system) at sample `index`."""
        cpu = self.samples[index][1]
        actors = sum(v for pid, v in cpu.items() if pid in self.actors)
        driver = cpu.get(self.root.pid, 0.0)
        return {"driver": driver, "actors": actors, "ray": sum(cpu.values()) - actors - driver}

    def at(self, moment: float) -> dict[str, float]:
        """`groups` interpolated linearly at a wall-clock `moment`."""
        times = [t for t, _ in self.samples]
        after = next((i for i, t in enumerate(times) if t >= moment), len(times) - 1)
        before = max(after - 1, 0)
        a, b = self.groups(before), self.groups(after)
        span = times[after] - times[before]
        share = 0.0 if span <= 0 else min(max((moment - times[before]) / span, 0.0), 1.0)
        return {key: a[key] + share * (b[key] - a[key]) for key in a}


def run_search(spec: dict[str, Any], tmp: Path, interval: float) -> tuple[TreeSampler, Path, str]:
    path = tmp / f"{spec['study']}.yaml"
    path.write_text(json.dumps(spec))
    storage = f"sqlite:///{tmp}/{spec['study']}.db"
    log = tmp / f"{spec['study']}.log"
    command = [str(Path(sys.executable).with_name("pressroom")), "search", str(path), "--storage", storage]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid, interval)
        sampler.start()
        code = process.wait()
        sampler.join()
    if code != 0:
        sys.exit(f"pressroom search exited with {code}:\n{log.read_text()[-4000:]}")
    return sampler, path, storage


def epoch(moment: datetime) -> float:
    """Optuna's RDB tables hold naive UTC datetimes."""
    return moment.replace(tzinfo=UTC).timestamp()


def dense_cpu_per_token(spec_path: Path, sizes: Counter[int], repeats: int) -> float:
    """CPU seconds per token of the dense forward, at each stage size weighted by its tokens."""
    torch.set_num_threads(THREADS)
    evaluator = Evaluator(load_spec(spec_path).evaluator_spec())
    per_token = {}
    for tokens in sizes:
        batch = evaluator.data.batch(Fidelity(tokens, (0, 0)))
        runs = []
        for _ in range(repeats + 1):  # the first is a warm-up
            start = time.process_time()
            with torch.no_grad():
                for chunk in batch.chunks(evaluator.chunk_rows()):
                    evaluator.outputs(evaluator.teacher_model, chunk.to(evaluator.device))
            runs.append(time.process_time() - start)
        per_token[tokens] = statistics.median(runs[1:]) / batch.tokens
    return sum(per_token[t] * n for t, n in sizes.items()) / sum(sizes.values())


def measure(model: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    spec = spec_for(model, args.generations, args.smoke)
    sampler, path, storage = run_search(spec, tmp, args.interval)
    trials = optuna.load_study(study_name=spec["study"], storage=storage).get_trials(deepcopy=False)
    records = [r for t in trials for r in t.user_attrs.get(EVALUATIONS, [])]
    # each worker forwards the dense teacher once per minibatch (generation, stage) it evaluates
    minibatches = {
        (t.user_attrs.get("generation"), r["stage"], int(r["tokens"]), r["worker"])
        for t in trials
        for r in t.user_attrs.get(EVALUATIONS, [])
    }
    sizes: Counter[int] = Counter()
    for record in records:
        sizes[int(record["tokens"])] += int(record["tokens"])
    tokens = sum(sizes.values())
    first = min(epoch(t.datetime_start) for t in trials if t.datetime_start is not None)
    last = max(epoch(t.datetime_complete) for t in trials if t.datetime_complete is not None)
    begin, end, total = sampler.at(first), sampler.at(last), sampler.groups(len(sampler.samples) - 1)
    window = {key: max(end[key] - begin[key], 0.0) for key in end}  # no -0.0 from rounding
    search_cpu = sum(window.values())
    dense = dense_cpu_per_token(path, sizes, args.repeats)
    return {
        "model": model,
        "search": search_cpu,
        **window,
        "in_tasks": sum(float(r.get("cpu_seconds", 0.0)) for r in records),
        "tokens": tokens,
        "seconds": last - first,
        "per_1k": 1e3 * search_cpu / tokens,
        "dense_per_1k": 1e3 * dense,
        "ratio": search_cpu / tokens / dense,
        "tasks_ratio": sum(float(r.get("cpu_seconds", 0.0)) for r in records) / tokens / dense,
        "teacher": sum(key[2] for key in minibatches),
        "startup": sum(begin.values()),
        "after": sum(total.values()) - sum(end.values()),
        "whole_ratio": sum(total.values()) / tokens / dense,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "model", "search CPU-s", "actors", "of which in tasks", "driver", "Ray system", "tokens", "wall s",
        "CPU-s / 1k tokens", "dense forward CPU-s / 1k tokens", "ratio", "in-task ratio",
        "teacher tokens", "floor with the teacher",
        "start-up CPU-s", "after CPU-s", "ratio incl. start-up and after",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        cells = [
            r["model"], f"{r['search']:.1f}", f"{r['actors']:.1f}", f"{r['in_tasks']:.1f}", f"{r['driver']:.1f}",
            f"{r['ray']:.1f}", f"{r['tokens']:,}", f"{r['seconds']:.0f}", f"{r['per_1k']:.3f}",
            f"{r['dense_per_1k']:.3f}", f"{r['ratio']:.2f}", f"{r['tasks_ratio']:.2f}", f"{r['teacher']:,}",
            f"{1 + r['teacher'] / r['tokens']:.2f}", f"{r['startup']:.1f}",
            f"{r['after']:.1f}", f"{r['whole_ratio']:.2f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,tiny-llama,smollm2", help=f"comma-separated, of {list(MODELS)}")
    parser.add_argument("--generations", type=int, help="EvoPress generations (default: per model, MODELS)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples of the process tree")
    parser.add_argument("--repeats", type=int, default=5, help="timed dense forwards per stage size")
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        parser.error(f"--models {args.models!r}: unknown {unknown}; allowed: {list(MODELS)}")
    if args.smoke:
        models, args.repeats = ["tiny-llama"], 2
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(model, args, Path(tmp)) for model in models]
    print(f"EvoPress, 2 workers x 1 CPU, {THREADS} torch thread; CPU of every process of the search")
    print(table(rows))


if __name__ == "__main__":
    main()
