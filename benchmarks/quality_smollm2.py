"""Quality on the packaged pretrained LLM SmolLM2-135M: every method, per setting, at one budget.

For each setting (unstructured sparsity with SparseGPT levels, average bitwidth with GPTQ levels,
depth: a fraction of the blocks dropped) it runs `pressroom compare`'s own code
(`search.driver.compare.compare`) on one pool of workers, with the docstrings as calibration
text, and prints one table per setting: each method's held-out KL to the dense model and
held-out perplexity on Jane Austen's novels (text no method sees while searching), over seeds,
with a ``dense`` row (the unmodified model's held-out perplexity; local backend only).

    .venv/bin/python benchmarks/quality_smollm2.py [--settings sparsity:0.7,bitwidth:3]
        [--methods evopress,random,random-sh,dass,dp,uniform,owl] [--budget 16384] [--seeds 2]
        [--backend ray|local] [--device auto|cpu|cuda] [--cache-dir DIR] [--out rows.jsonl]
        [--data-dir DIR] [--write-data DIR] [--from rows.jsonl] [--points 6] [--figure PATH] [--smoke]

`--out` gets one JSON line per finished (setting, method, seed), written and flushed at once,
so a run stopped at a time limit keeps every row it finished; `--from` prints the tables of such
a file without computing anything. `--write-data DIR` writes the calibration and held-out token
blocks this machine cuts (``calibration.npy``, ``heldout.npy``: one document each) and stops;
`--data-dir DIR` makes the specs read them, so another machine (another Python, no Austen
package) forwards byte-identical tokens. Settings run in the order given, methods too.

`--smoke` is the smallest setting, for CI: 70 % sparsity only with Wanda levels (SparseGPT's
database takes minutes on 2 CPU cores), one seed, fewer levels, a one-generation schedule on
128 and 256 tokens, 2,048 tokens per method, smaller data splits; `--out` and `--figure` go to
a temporary folder (with `--from`, the saved rows are read as given).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tokens_curve import COLD, WARM, verdicts

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
SETTINGS = "sparsity:0.7,bitwidth:3,sparsity:0.5,sparsity:0.6,bitwidth:4,drop:0.25"  # most wanted first
METHODS = "evopress,random,random-sh,dass,dp,uniform,owl"
COMPRESSOR = {"sparsity": "sparsegpt", "bitwidth": "gptq", "drop": "drop"}
DATA = {"seq_len": 128, "calibration_tokens": 65536, "heldout_tokens": 4096, "stats_tokens": 4096}
SCHEDULE = {"generations": 8, "offspring": 8, "stages": [[2, 256], [1, 1024]]}  # `compare` stops at the budget
SMOKE_DATA = {"seq_len": 128, "calibration_tokens": 2048, "heldout_tokens": 512, "stats_tokens": 512}
SMOKE_SCHEDULE = {"generations": 1, "offspring": 4, "stages": [[2, 128], [1, 256]]}
FILES = ("calibration.npy", "heldout.npy")
RAY_WORKERS = {"count": 2, "cpus_per_worker": 1, "torch_threads": 1}


def parse_settings(text: str) -> list[tuple[str, float]]:
    """``"sparsity:0.7,bitwidth:3"`` -> [("sparsity", 0.7), ("bitwidth", 3.0)]."""
    settings = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        scheme, _, target = item.partition(":")
        if scheme not in COMPRESSOR or not target:
            raise SystemExit(f"--settings: bad {item!r}; expected SCHEME:TARGET with SCHEME one of {list(COMPRESSOR)}")
        settings.append((scheme, float(target)))
    return settings


def compression(scheme: str, target: float, smoke: bool) -> dict[str, object]:
    """SparseGPT levels in EvoPress's equal steps; GPTQ levels 2-6 bits in groups of 64; attention
    and MLP sub-blocks dropped each on its own (EvoPress's depth setting)."""
    levels: dict[str, object] = {}
    if scheme == "sparsity":
        levels = {"max_levels": 2 if smoke else 4}
    elif scheme == "bitwidth":
        levels = {"choices": [2, 3, 4] if smoke else [2, 3, 4, 5, 6], "group_size": 64}
    compressor = "wanda" if smoke and scheme == "sparsity" else COMPRESSOR[scheme]  # no Hessians in CI
    unit = {"drop_unit": "sub-block"} if scheme == "drop" else {}
    return {"scheme": scheme, "target": target, "compressor": compressor, "levels": levels, **unit}


def data_section(args: argparse.Namespace) -> dict[str, object]:
    sizes = SMOKE_DATA if args.smoke else DATA
    if args.data_dir is None:
        return {"source": "default", "heldout_source": "austen", **sizes}
    calibration, heldout = (str(Path(args.data_dir).resolve() / name) for name in FILES)
    return {"source": calibration, "heldout_source": heldout, **sizes}


def spec_for(scheme: str, target: float, args: argparse.Namespace, storage: str) -> dict[str, object]:
    return {
        "model": {"name": "pressroom:smollm2-135m"},
        "task": "causal-lm",
        "compression": compression(scheme, target, args.smoke),
        "data": data_section(args),
        "algorithm": {"name": "evopress", "params": SMOKE_SCHEDULE if args.smoke else SCHEDULE},
        "workers": {"backend": args.backend, "device": args.device, **(RAY_WORKERS if args.backend == "ray" else {})},
        "mlflow": {"enabled": False},
        "cache_dir": str(args.cache_dir),
        "storage": storage,
        "study": f"smollm2-{scheme}-{target:g}",
    }


def write_data(args: argparse.Namespace) -> None:
    """The token blocks the specs cut, each split as one document: read back from these files,
    `TokenData` cuts the same blocks (one document is not shuffled, and its tokens fill the
    blocks in order)."""
    from evaluators.data.tokens import TokenData
    from evaluators.models import load_model
    from search.spec.config import load_spec_text

    spec = load_spec_text(json.dumps(spec_for("sparsity", 0.7, args, "sqlite:///:memory:"))).evaluator_spec()
    loaded = load_model(spec.model, spec.task, "cpu", spec.cache_dir)
    data = TokenData(spec.data, loaded.tokenizer, loaded.task, spec.seed, Path(spec.cache_dir))
    folder = Path(args.write_data)
    folder.mkdir(parents=True, exist_ok=True)
    for name, blocks in zip(FILES, (data.calibration, data.heldout), strict=True):
        np.save(folder / name, blocks.reshape(-1))
    print(f"wrote {folder}/{{{','.join(FILES)}}}: data fingerprint {data.fingerprint}")


def dense_row(workers: Any, setting: str, tokens: int) -> dict[str, Any] | None:
    """The unmodified model's held-out values, where its evaluator is in this process."""
    runner = getattr(workers.pool, "runner", None)
    if runner is None:
        return None
    start = time.monotonic()
    result = runner.evaluator.heldout(None, tokens)
    seconds = time.monotonic() - start
    return {
        "setting": setting, "method": "dense", "seed": 0, "study": "", "heldout": float(result.fitness),
        "perplexity": result.perplexity, "seconds": seconds, "evaluations": 1, "tokens": 0, "curve": [],
    }  # fmt: skip


def emit_run(emit: Any, setting: str, run: Any) -> None:
    emit({"setting": setting, **dataclasses.asdict(run)})


def run_table(args: argparse.Namespace, emit: Any) -> None:
    from search.driver.compare import compare, parse_methods
    from search.driver.run import Workers
    from search.spec.config import load_spec_text

    methods = parse_methods(args.methods)
    with tempfile.TemporaryDirectory() as tmp:
        for scheme, target in parse_settings(args.settings):
            setting = f"{scheme}:{target:g}"
            spec = load_spec_text(json.dumps(spec_for(scheme, target, args, f"sqlite:///{tmp}/compare.db")))
            started = time.monotonic()
            with Workers(spec) as workers:
                print(f"{setting}: workers ready in {time.monotonic() - started:.0f} s", flush=True)
                dense = dense_row(workers, setting, spec.data.heldout_tokens)
                if dense is not None:
                    emit(dense)
                compare(
                    spec, methods, budget_tokens=args.budget, seeds=args.seeds, points=args.points, workers=workers,
                    on_run=functools.partial(emit_run, emit, setting),
                )  # fmt: skip


def runs_by_setting(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    from search.driver.compare import Run

    settings: dict[str, list[Any]] = {}
    for row in rows:
        settings.setdefault(row["setting"], []).append(Run(**{k: v for k, v in row.items() if k != "setting"}))
    return settings


def draw(rows: list[dict[str, Any]], figure: Path) -> None:
    """One curve figure per setting whose runs measured more than their answer (`--points` > 1):
    held-out KL of each method's incumbents against tokens."""
    from search.results.comparison import curve_figure
    from search.results.figures import save_png

    for setting, runs in runs_by_setting(rows).items():
        curves = {m: [r.curve for r in runs if r.method == m] for m in dict.fromkeys(r.method for r in runs)}
        curves.pop("dense", None)
        if all(len({value for _, value in curve}) < 2 for runs_of in curves.values() for curve in runs_of):
            continue  # each run measured only its answer
        path = figure.with_name(f"{figure.stem}-{setting.replace(':', '-')}{figure.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        title = f"SmolLM2-135M, {setting}: held-out KL against forwarded tokens"
        save_png(curve_figure(curves, f"{title} ({max(len(c) for c in curves.values())} seeds)"), path)
        path.with_suffix(".json").write_text(json.dumps(curves, indent=1))
        print(f"figure: {path} (curves: {path.with_suffix('.json')})")


def tables(rows: list[dict[str, Any]]) -> str:
    """One markdown table per setting (best held-out KL first) and its `summarize` rows as JSON,
    followed by the warm-start verdicts where the setting has the rows they need."""
    from search.driver.compare import summarize

    parts = []
    for setting, runs in runs_by_setting(rows).items():
        summary = summarize(runs)
        seeds = max(len({run.seed for run in runs if run.method == m["method"]}) for m in summary)
        lines = [
            f"## {setting}",
            "",
            f"| method | held-out KL, mean of {seeds} seeds | sd | held-out perplexity | tokens | wall s per seed |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in sorted(summary, key=lambda r: float("inf") if r["heldout_mean"] is None else r["heldout_mean"]):
            kl = "-" if row["heldout_mean"] is None else f"{row['heldout_mean']:.4f}"
            ppl = "-" if row["perplexity_mean"] is None else f"{row['perplexity_mean']:.2f}"
            cells = [
                row["method"],
                kl,
                f"{row['heldout_std']:.4f}",
                ppl,
                f"{row['tokens']:,.0f}",
                f"{row['seconds']:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if {COLD, WARM, "dp"} <= {run.method for run in runs}:
            lines += ["", *verdicts(runs)]
        parts.append(json.dumps({"setting": setting, "rows": summary}, indent=1) + "\n" + "\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=SETTINGS)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--budget", type=int, default=16_384, help="forwarded tokens per method and seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--backend", choices=("ray", "local"), default="local")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cache-dir", type=Path, default=CACHE, help="the model and the compression databases")
    parser.add_argument("--out", type=Path, help="append one JSON line per finished row")
    parser.add_argument("--data-dir", help="read the token files --write-data wrote")
    parser.add_argument("--write-data", help="write this machine's token blocks to this folder and stop")
    parser.add_argument("--from", dest="source", type=Path, help="only print the tables of an earlier --out file")
    parser.add_argument("--points", type=int, default=6, help="incumbents per run measured on the held-out split")
    parser.add_argument("--figure", type=Path, help="draw each setting's curves to this PNG")
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.budget, args.seeds, args.settings = 2048, 1, "sparsity:0.7"
        scratch = Path(tempfile.mkdtemp(prefix="smollm2-smoke-"))  # a smoke run leaves the tree as it was
        args.out, args.figure = (None if path is None else scratch / path.name for path in (args.out, args.figure))
        if args.methods == METHODS:
            args.methods = "uniform,owl,evopress"
    if args.write_data:
        write_data(args)
        return
    if args.source is not None:
        saved = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
        print(tables(saved))
        if args.figure is not None:
            draw(saved, args.figure)
        return
    rows: list[dict[str, Any]] = []
    out = None if args.out is None else args.out.open("a")

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"row: {row['setting']} {row['method']} seed {row['seed']}: KL {row['heldout']}", flush=True)
        if out is not None:
            out.write(json.dumps(row) + "\n")
            out.flush()

    try:
        run_table(args, emit)
    finally:
        if out is not None:
            out.close()
    print(tables(rows))
    if args.figure is not None:
        draw(rows, args.figure)


if __name__ == "__main__":
    main()
