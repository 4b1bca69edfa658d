"""Quality against forwarded tokens on the small causal LM of quality_causal.py: EvoPress from the
uniform profile (cold), EvoPress from the additive DP's profile (warm, `evopress-dp`), each also
with a skip margin (`skip_margin`: a generation whose parent beats every child in the first stage
ends there), random search and the DP, all through `pressroom compare` at one token budget.

    .venv/bin/python benchmarks/tokens_curve.py [--budget 400000] [--seeds 2] [--skip-margin 0] [--points 12]
        [--train-seconds 180] [--figure docs/images/tokens_curve.png] [--smoke]

Every incumbent of a run (up to `--points` of them) is measured on the held-out split, which
gives held-out KL against the tokens asked when it became the incumbent (the curves are saved
next to the figure, as JSON). The script prints one row per method, then the verdicts: the
tokens each warm or skip run needed to reach the cold runs' mean final held-out KL, as a
fraction of the cold runs' mean tokens (the goal of docs/benchmarks.md: at most 0.5), and
whether warm EvoPress ended no worse than the DP.
`--smoke` is the smallest setting, for CI: quality_causal's smoke model, data and schedule, one
seed, 4 points, and 16,000 tokens per run (the DP's statistics pass, which the warm start
pays, is the smoke data's 1,024 statistics tokens), a few generations each; the same methods,
the same lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quality_causal import CACHE, DATA, SCHEDULE, SMOKE_DATA, SMOKE_SCHEDULE, train  # noqa: E402

from search.driver.compare import Run, compare  # noqa: E402
from search.results.comparison import curve_figure  # noqa: E402
from search.results.figures import save_png  # noqa: E402
from search.spec.config import load_spec  # noqa: E402

COLD, WARM, SKIP = "evopress", "evopress-dp", "+skip"


def reached(curve: list[tuple[int, float | None]], target: float) -> int | None:
    """The tokens at which a curve first reaches `target` (None if it never does)."""
    return next((tokens for tokens, value in curve if value is not None and value <= target), None)


def runs_for(spec_path: Path, storage: str, methods: list[str], args: argparse.Namespace, suffix: str) -> list[Run]:
    spec = load_spec(spec_path, overrides={"storage": storage})
    runs = compare(spec, methods, budget_tokens=args.budget, seeds=args.seeds, points=args.points)
    return [dataclasses.replace(run, method=run.method + suffix) for run in runs]


def table(runs: list[Run]) -> list[dict[str, object]]:
    rows = []
    for method in dict.fromkeys(run.method for run in runs):
        mine = [run for run in runs if run.method == method and run.heldout is not None]
        values = [run.heldout for run in mine if run.heldout is not None]
        rows.append(
            {
                "method": method,
                "heldout_kl_mean": statistics.fmean(values),
                "heldout_kl_per_seed": values,
                "tokens_mean": statistics.fmean(run.tokens for run in mine),
                "seconds_mean": round(statistics.fmean(run.seconds for run in mine), 1),
            }
        )
    return rows


def verdicts(runs: list[Run]) -> list[str]:
    cold = [run for run in runs if run.method == COLD]
    target = statistics.fmean(run.heldout for run in cold if run.heldout is not None)
    cold_tokens = statistics.fmean(run.tokens for run in cold)
    dp = next(run.heldout for run in runs if run.method == "dp")
    lines = [f"cold EvoPress: final held-out KL {target:.5f} (mean of {len(cold)}) at {cold_tokens:,.0f} tokens"]
    for method in (WARM, COLD + SKIP, WARM + SKIP):
        for run in (run for run in runs if run.method == method):
            tokens = reached(run.curve, target)
            share = "never" if tokens is None else f"{tokens:,} tokens = {tokens / cold_tokens:.2f} of cold's"
            lines.append(f"{method} seed {run.seed}: reaches cold's final KL at {share}; ends at {run.heldout:.5f}")
    for method in (WARM, WARM + SKIP):
        for run in (run for run in runs if run.method == method):
            verdict = "no worse than" if run.heldout is not None and run.heldout <= dp else "WORSE than"
            lines.append(f"{method} seed {run.seed}: {run.heldout:.5f}, {verdict} the DP's {dp:.5f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=400_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--skip-margin", type=float, default=0.0)
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--train-seconds", type=float, default=180)
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "tokens_curve.png")
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.train_seconds, args.budget, args.seeds, args.points = 5, 16_000, 1, 4
    folder = CACHE / f"tiny-lm-{int(args.train_seconds)}s"
    if not (folder / "config.json").exists():
        facts = train(folder, args.train_seconds)
        print(f"trained {folder.name}: {facts['steps']} steps, train perplexity {facts['train_perplexity']:.2f}")
    schedule = SMOKE_SCHEDULE if args.smoke else SCHEDULE
    spec = {
        "model": {"name": str(folder)},
        "task": "causal-lm",
        "compression": {"scheme": "sparsity", "target": 0.6, "compressor": "sparsegpt", "levels": {"max_levels": 4}},
        "data": SMOKE_DATA if args.smoke else DATA,
        "algorithm": {"name": "evopress", "params": schedule},
        "workers": {"count": 2, "cpus_per_worker": 1, "torch_threads": 1},
        "mlflow": {"enabled": False},
        "cache_dir": str(CACHE),
        "study": "tokens-curve",
    }
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/curve.db"
        cold_path, skip_path = Path(tmp) / "spec.yaml", Path(tmp) / "skip.yaml"
        cold_path.write_text(json.dumps(spec))
        skip = {**schedule, "skip_margin": args.skip_margin}
        skip_path.write_text(json.dumps({**spec, "algorithm": {"name": "evopress", "params": skip}, "study": "skip"}))
        runs = runs_for(cold_path, storage, [COLD, WARM, "random", "dp"], args, "")
        runs += runs_for(skip_path, storage, [COLD, WARM], args, SKIP)
    curves = {
        method: [run.curve for run in runs if run.method == method] for method in dict.fromkeys(r.method for r in runs)
    }
    figure = Path(tempfile.gettempdir()) / "tokens_curve_smoke.png" if args.smoke else args.figure
    figure.parent.mkdir(parents=True, exist_ok=True)
    title = f"tiny Llama-style LM, 60 % sparsity: held-out KL against forwarded tokens ({args.seeds} seeds)"
    save_png(curve_figure(curves, title), figure)
    figure.with_suffix(".json").write_text(json.dumps(curves, indent=1))
    print(json.dumps(table(runs), indent=1))
    print("\n".join(verdicts(runs)))
    print(f"figure: {figure} (curves: {figure.with_suffix('.json')})")


if __name__ == "__main__":
    main()
