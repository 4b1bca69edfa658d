"""The built wheel holds exactly the four packages and the `pressroom` console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_four_packages_and_the_console_script(tmp_path: Path) -> None:
    # Built from a copy, so setuptools' build/ folder never lands in the checkout; --no-isolation:
    # the venv's setuptools builds it, so nothing is downloaded.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", ".cache"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("pressroom-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"spaces", "search", "workers", "evaluators"}
    assert "[console_scripts]" in scripts and "pressroom = search.cli:main" in scripts
    assert not any("/tests/" in n or n.startswith(("tests/", "benchmarks/")) for n in names)
    shipped = {
        f"evaluators/quality/tasks/{name}.{ext}"
        for name in ("pressroom_facts", "pressroom_sequences")
        for ext in ("yaml", "jsonl")
    }
    assert shipped <= set(names)  # the zero-shot tasks `pressroom eval` runs offline
