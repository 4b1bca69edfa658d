"""Every documented benchmark command runs, at its smallest size, and prints its table.

docs/benchmarks.md says each table was printed by the command above it. These tests take every
``.venv/bin/python benchmarks/NAME.py ...`` command written in README.md and docs/*.md, append
``--smoke`` (each script's smallest setting: same code path, same table) and run it from the
repository root, so a documented command cannot silently break again. CI has no GPU, so
``gpu_check.py`` must say it skipped. A script named like an importable module shadows it for
everything the script imports (``benchmarks/kernels.py`` once broke transformers), so no
benchmark may take such a name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"\.venv/bin/python benchmarks/([\w-]+)\.py([^`\n]*)")

#: Per script, what its output must hold (its ratio or table line) and must not.
EXPECTED: dict[str, list[str]] = {
    "evaluator": [r"evaluation / dense forward\s+\d+\.\d+"],
    "prefix": [r"\noff\s+\d+\.\d+\s+100%\s+yes", r"\non, routed\s+\d+\.\d+\s+\d+%\s+yes"],
    "kernel_speed": [r"\| 384x1536 \| \d+\.\d+ \| \d", r"\| int8 everywhere \| [\d.]+ \| [\d.]+ \| \d+\.\d+ \("],
    "coordinator": [r"random:\n.*overhead.*\n\s+1\s+\d+\s+\d", r"evopress:\n.*overhead.*\n\s+1\s+\d+\s+\d"],
    "storage": [r'"create \(json attribute\)": "[\d.]+ ms"'],
    "quality_minilm": [r'"heldout_mean": \d'],
    "quality_causal": [r'"heldout_mean": \d', r'"perplexity_mean": \d'],
    "tokens_curve": [r'"heldout_kl_mean": \d', r"\nevopress-dp seed 0: [\d.]+, (no worse|WORSE) than the DP's"],
    "quality_smollm2": [r'"heldout_mean": \d', r"\n\| evopress \| \d"],
    "gpu_check": [r"no CUDA, skipped|all CUDA checks passed"],  # CI has no GPU
    "db_open": [r"\nopen \(manifest, sizes\)\s+\d+\.\d+\n", r"\nfull hash \(verify-db; [^)]*\)\s+\d+\.\d+\n"],
    "llmc_oneshot": [r"\n\| pressroom:tiny-llama \| gptq \| 28 \| \d+ \| \d+\.\d \| yes \|"],
    "db_build": [r"\nRay, 2 workers\s+\d+\.\d+\s+\d+\.\d+x\n", r"same manifest \([^)]*\): yes"],
    "cpu_per_token": [r"\n\| tiny-llama \| (?:-?[\d.,]+ \| ){9}\d+\.\d\d \|"],  # its ratio column
}
#: Parts that a flag adds, and the line each prints.
FLAG_EXPECTED = {
    ("kernel_speed", "--forms"): r"## Sparse matmul call forms[\s\S]*?\n\| 384x384 \| 50% \| \d",
    ("kernel_speed", "--compile"): r"torch\.compile of the stitched model: compiled",
}
#: The services each script uses (for `-m` selection).
SERVICES = {
    "storage": [pytest.mark.postgres],
    "coordinator": [pytest.mark.postgres, pytest.mark.ray],
    "quality_minilm": [pytest.mark.ray],
    "quality_causal": [pytest.mark.ray],
    "tokens_curve": [pytest.mark.ray],
    "quality_smollm2": [pytest.mark.ray],
    "db_build": [pytest.mark.ray],
    "cpu_per_token": [pytest.mark.ray],
}
FORBIDDEN = {
    "db_build": r"same manifest [^:]*: NO",
    "prefix": r"\bNO\b",
    "quality_minilm": r'"heldout_mean": null',
    "quality_causal": r'"heldout_mean": null',
    "quality_smollm2": r'"heldout_mean": null',
}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(script name, arguments) of every benchmark command in the README and docs, in order, once each."""
    found: list[tuple[str, list[str]]] = []
    for path in DOCS:
        text = re.sub(r"\\\n\s*", " ", path.read_text())  # join shell continuation lines
        for match in COMMAND.finditer(text):
            command = (match.group(1), shlex.split(match.group(2), comments=True))
            if command not in found:
                found.append(command)
    return found


def environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


COMMANDS = documented_commands()


def test_every_benchmark_is_documented() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    documented = {name for name, _ in COMMANDS}
    assert scripts - documented == set(), "benchmarks with no `.venv/bin/python benchmarks/...` line in README/docs"
    assert documented - scripts == set(), "documented benchmark commands whose script does not exist"
    assert set(EXPECTED) == scripts, "every benchmark needs the line its smoke run must print (EXPECTED)"


def test_no_benchmark_shadows_an_importable_module(tmp_path: Path) -> None:
    """`python benchmarks/X.py` puts benchmarks/ first on sys.path: X must not be a module name."""
    names = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    probe = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([n for n in sys.argv[1:] if n in sys.stdlib_module_names "
        "or importlib.util.find_spec(n) is not None]))"
    )
    # run from an empty folder, so only the standard library, installed distributions and the
    # project's own packages are importable
    out = subprocess.run(
        [sys.executable, "-c", probe, *names], cwd=tmp_path, env=environment(),
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(out.stdout) == [], "benchmark file names that shadow importable modules; rename them"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "args"),
    [pytest.param(n, a, marks=SERVICES.get(n, []), id=" ".join([n, *a])) for n, a in COMMANDS],
)
def test_documented_command_runs_at_smoke_size(name: str, args: list[str]) -> None:
    command = [sys.executable, f"benchmarks/{name}.py", *args, "--smoke"]
    done = subprocess.run(
        command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=900, check=False
    )
    output = done.stdout + done.stderr
    shown = f"{shlex.join(command)} (exit {done.returncode}):\n{output[-6000:]}"
    assert done.returncode == 0, shown
    wanted = EXPECTED[name] + [p for (script, flag), p in FLAG_EXPECTED.items() if script == name and flag in args]
    for pattern in wanted:
        assert re.search(pattern, done.stdout), f"no line matching {pattern!r} in the output of {shown}"
    if name in FORBIDDEN:
        assert not re.search(FORBIDDEN[name], done.stdout), shown
