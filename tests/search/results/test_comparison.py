"""`pressroom compare`'s table whole when piped, as CSV and Markdown, and its figure next to -o."""

from __future__ import annotations

import csv
import io

import optuna
import yaml

from search.algorithms import EvoPress, EvoPressConfig
from search.cli.common import show_table
from search.driver.compare import COMPARE, Run, Trajectory, record, summarize
from search.results.comparison import BAND_LABEL, COLUMNS, comparison_table, comparison_text, curve_figure
from search.spec.config import load_spec_text
from tests.search.conftest import tiny_search
from tests.search.harness import additive_problem, sparsity_space


def _runs() -> list[Run]:
    """Two methods, three seeds each, with curves measured at different token counts."""
    runs = []
    for method, base in (("evopress", 0.0123456789), ("a-method-with-a-long-name", 0.0234567891)):
        for seed in range(3):
            curve = [(1000 + 100 * seed, base * 3), (40_000 + 50 * seed, base * 2), (512_000, base + seed * 1e-4)]
            heldout, perplexity, seconds = base + seed * 1e-4, 12.345678 + seed, 1234.5 + seed
            tokens = 1_234_567_890 + seed
            runs.append(Run(method, seed, f"s{seed}", heldout, perplexity, seconds, 1187 + seed, tokens, curve))
    return runs


def test_the_piped_table_keeps_every_column_and_number(capsys):
    rows = summarize(_runs())
    show_table(comparison_table(rows, "cmp: 1,234,567,890 forwarded tokens per run, 3 seed(s)"))
    text = capsys.readouterr().out  # captured stdout is not a terminal: rich would assume 80 columns
    assert "…" not in text
    for header, _, _ in COLUMNS:
        assert header in text
    for row in rows:
        line = next(line for line in text.splitlines() if f" {row['method']} " in line)
        for _, key, show in COLUMNS:
            assert show(row[key]) in line, (key, line)
    assert "1,234,567,891" in text and "0.012446" in text and "0.012346" in text  # tokens, mean, best seed


def test_csv_and_markdown_parse_back_to_the_rows():
    rows = summarize(_runs())
    parsed = list(csv.DictReader(io.StringIO(comparison_text(rows, "csv"))))
    assert [p["method"] for p in parsed] == ["evopress", "a-method-with-a-long-name"]  # best first
    for p, row in zip(parsed, rows, strict=True):
        for header, key, _ in COLUMNS:
            assert p[header] == str(row[key])  # unrounded
    lines = comparison_text(rows, "markdown").splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == [header for header, _, _ in COLUMNS]
    assert set(cells[1]) <= {"---", "---:"} and len(cells) == 2 + len(rows)
    assert cells[2][0] == "evopress" and cells[2][1] == "0.012446"


def test_the_figure_labels_each_seed_and_draws_each_methods_mean_in_a_band():
    runs = _runs()
    curves = {m: [r.curve for r in runs if r.method == m] for m in ("evopress", "a-method-with-a-long-name")}
    (ax,) = curve_figure(curves, "cmp").axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for method in curves:
        seeds = [label for label in labels if label.startswith(f"{method} seed")]
        assert seeds == [f"{method} seed {k}" for k in range(3)]
        assert f"{method} mean ({BAND_LABEL})" in labels
    assert len(ax.collections) == 2  # one band per method
    mean = next(line for line in ax.get_lines() if line.get_label() == f"evopress mean ({BAND_LABEL})")
    xs, ys = mean.get_data()
    # at 512,000 tokens every seed has its last value: the mean of the three
    last = [r.curve[-1][1] for r in runs if r.method == "evopress"]
    assert xs[-1] == 512_000 and abs(ys[-1] - sum(last) / 3) < 1e-12


def test_record_writes_the_figure_where_the_cli_asks(tmp_path, cache_dir):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spec = load_spec_text(yaml.safe_dump(tiny_search(cache_dir, storage=url, artifacts=str(tmp_path / "art"))))
    output = tmp_path / "out" / "cmp.json"
    figure = record(spec, _runs(), 1_234_567_890, output.with_suffix(".png"))
    assert figure == tmp_path / "out" / "cmp.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    study = optuna.load_study(study_name=f"{spec.study_name}-compare", storage=url)
    assert [row["method"] for row in study.user_attrs[COMPARE]["rows"]] == ["evopress", "a-method-with-a-long-name"]


def test_a_bad_format_or_a_png_output_is_refused_before_anything_runs(run_cli, tmp_path):
    bad = run_cli("compare", str(tmp_path / "spec.yaml"), "--format", "html")
    assert bad.returncode == 2 and "error: --format 'html' is not known; allowed: table, csv, markdown" in bad.stderr
    png = run_cli("compare", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "cmp.png"))
    assert png.returncode == 2 and "would be overwritten by the figure" in png.stderr


def test_a_trajectory_keeps_each_incumbent_at_the_tokens_it_appeared_and_the_end():
    space = sparsity_space(12)
    problem = additive_problem(space, 1)
    algo = EvoPress(space, EvoPressConfig.preset("cpu-small", generations=6), seed=0)
    trajectory, seen = Trajectory(), []
    while not algo.finished:
        batch = algo.ask(100)
        for candidate in batch:
            before = algo.best
            algo.tell([problem.respond(candidate)])
            trajectory.on_result(candidate, None, algo)  # type: ignore[arg-type]
            if algo.best is not None and (before is None or before[0] != algo.best[0]):
                seen.append((algo.tokens_asked, tuple(int(v) for v in space.to_array(algo.best[0]))))
    trajectory.on_finish(algo)
    assert trajectory.points == seen and len(seen) > 1
    assert trajectory.end == algo.tokens_asked >= seen[-1][0] > seen[0][0]
    assert trajectory.sampled(2)[-1] == seen[-1] and len(trajectory.sampled(100)) == len(seen)
