"""The spec file: every malformed spec is one line naming its key; precedence; redaction; fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.cli.common import read_spec
from search.spec.config import DEFAULT_STORAGE, ENV_STORAGE, ENV_TRACKING, Spec, SpecError, load_spec, load_spec_text

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("*.yaml"))
SECRET = "hunter2-do-not-print"

# (name, YAML text, the key path the one line must name, fragments it must also hold: the bad
# value and what is allowed, where there is one).
MALFORMED = [
    ("unknown-top-level-key", "modle: {name: x}", "modle", ["unknown key", "'model'", "'compression'"]),
    ("unknown-nested-key", "compression: {scheem: sparsity}", "compression.scheem", ["unknown key", "'scheme'"]),
    (
        "unknown-levels-key",
        "compression: {levels: {maxlevels: 3}}",
        "compression.levels.maxlevels",
        ["unknown key", "'max_levels'"],
    ),
    ("bad-scheme", "compression: {scheme: pruning}", "compression.scheme", ["'pruning'", "'bitwidth'"]),
    (
        "compressor-not-of-scheme",
        "compression: {scheme: bitwidth, target: 3, compressor: wanda}",
        "compression.compressor",
        ["'wanda'", "'gptq'", "'rtn'"],
    ),
    ("sparsity-above-one", "compression: {scheme: sparsity, target: 1.5}", "compression.target", ["1.5", "0 and 1"]),
    ("sparsity-zero", "compression: {scheme: sparsity, target: 0}", "compression.target", ["got 0", "greater than 0"]),
    (
        "bits-outside-choices",
        "compression: {scheme: bitwidth, target: 7, levels: {choices: [2, 3, 4]}}",
        "compression.levels",
        ["7", "[2, 4]"],
    ),
    (
        "empty-bit-choices",
        "compression: {scheme: bitwidth, target: 3, levels: {choices: []}}",
        "compression.levels.choices",
        ["at least 1 item"],
    ),
    (
        "group-size-not-dividing-a-layer",
        "model: {name: 'pressroom:tiny-llama'}\ncompression: {scheme: bitwidth, target: 4, levels: {group_size: 32}}",
        "compression.levels.group_size",
        ["group size 32 does not divide model.layers.0.mlp.down_proj's 176 input columns", "at most 16"],
    ),
    ("bad-granularity", "compression: {granularity: row}", "compression.granularity", ["'row'", "'layer'", "'block'"]),
    ("empty-include", "compression: {include: []}", "compression.include", ["at least 1 item", "got []"]),
    ("drop-unit", "compression: {scheme: drop, target: 0.25, drop_unit: head}", "compression.drop_unit", ["'head'"]),
    ("seq-len-too-small", "data: {seq_len: 4}", "data.seq_len", ["got 4", "8"]),
    (
        "heldout-above-calibration",
        "data: {calibration_tokens: 1000, heldout_tokens: 2000, stats_tokens: 1000}",
        "data.heldout_tokens",
        ["2000", "calibration_tokens (1000)"],
    ),
    ("unknown-algorithm", "algorithm: {name: genetic}", "algorithm.name", ["'genetic'", "'evopress'"]),
    (
        "bad-algorithm-param-value",
        "algorithm: {name: evopress, params: {generations: -3}}",
        "algorithm.params.generations",
        ["-3", ">= 1"],
    ),
    (
        "bad-algorithm-param-type",
        "algorithm: {name: evopress, params: {generations: many}}",
        "algorithm.params.generations",
        ["'many'", "integer"],
    ),
    (
        "unknown-algorithm-param",
        "algorithm: {name: evopress, params: {generatons: 3}}",
        "algorithm.params.generatons",
        ["unknown key", "'generations'"],
    ),
    ("unknown-preset", "algorithm: {name: evopress, preset: huge}", "algorithm.preset", ["'huge'", "'sparsity'"]),
    ("zero-workers", "workers: {count: 0}", "workers.count", ["got 0", "1"]),
    ("zero-in-flight", "workers: {in_flight: 0}", "workers.in_flight", ["got 0", "greater than or equal to 1"]),
    ("bad-gpus", "workers: {gpus_per_worker: lots}", "workers.gpus_per_worker", ["'lots'", "'auto'"]),
    ("storage-not-a-url", "storage: pressroom.db", "storage", ["'pressroom.db'", "sqlite:///"]),
    ("negative-seed", "seed: -1", "seed", ["got -1", "0"]),
    ("mlflow-enabled-not-boolean", "mlflow: {enabled: maybe}", "mlflow.enabled", ["'maybe'", "boolean"]),
    ("bad-dtype", "model: {dtype: float8}", "model.dtype", ["'float8'", "'bfloat16'"]),
    ("bad-task", "task: seq2seq", "task", ["'seq2seq'", "'causal-lm'", "'encoder'"]),
    ("section-not-a-mapping", "compression: 0.5", "compression", ["0.5", "dictionary"]),
    ("yaml-syntax-error", "compression:\n  scheme: sparsity\n  target: [0.5\n", "line 4", ["not valid YAML"]),
    ("top-level-list", "- model\n- data\n", "(top level)", ["mapping", "list"]),
    ("top-level-scalar", "hello", "(top level)", ["mapping", "str"]),
    # strict types: nothing converted behind the user's back
    ("count-boolean", "workers: {count: true}", "workers.count", ["a boolean is not an integer", "got True"]),
    ("count-string", 'workers: {count: "2"}', "workers.count", ["a string is not an integer", "got '2'"]),
    ("seq-len-boolean", "data: {seq_len: true}", "data.seq_len", ["a boolean is not an integer", "got True"]),
    ("target-boolean", "compression: {target: true}", "compression.target", ["a boolean is not a number"]),
    ("timeout-string", 'workers: {timeout_s: "60"}', "workers.timeout_s", ["a string is not a number", "'60'"]),
    ("choice-boolean", "compression: {levels: {choices: [2, true]}}", "compression.levels.choices.1", ["boolean"]),
    ("enabled-integer", "mlflow: {enabled: 1}", "mlflow.enabled", ["got 1", "boolean"]),
    (
        "param-boolean",
        "algorithm: {name: evopress, params: {generations: true}}",
        "algorithm.params.generations",
        ["a boolean is not an integer"],
    ),
    (
        "param-string",
        'algorithm: {name: evopress, params: {offspring: "8"}}',
        "algorithm.params.offspring",
        ["a string is not an integer", "'8'"],
    ),
    # upper bounds
    (
        "generations-huge",
        "algorithm: {name: evopress, params: {generations: 1000000000000000000000}}",
        "algorithm.params.generations",
        ["1000000000000000000000", "<= 1,000,000"],
    ),
    (
        "budget-huge",
        "algorithm: {name: random-sh, params: {budget_tokens: 10000000000000}}",
        "algorithm.params.budget_tokens",
        ["10000000000000", "<= 1,000,000,000,000"],
    ),
    ("tokens-huge", "data: {calibration_tokens: 10000000000000}", "data.calibration_tokens", ["1000000000"]),
    ("seq-len-huge", "data: {seq_len: 40000}", "data.seq_len", ["got 40000", "32768"]),
    ("repeats-huge", "latency: {objective: true, repeats: 5000}", "latency.repeats", ["got 5000", "1000"]),
    ("gpus-huge", "workers: {gpus_per_worker: 100}", "workers.gpus_per_worker", ["got 100", "64"]),
    # duplicate keys: YAML would let the last one win
    ("duplicate-key", "workers:\n  count: 2\n  count: 3\n", "workers.count", ["duplicate key at line 3", "line 2"]),
    ("duplicate-section", "seed: 1\nseed: 2\n", "seed", ["duplicate key at line 2", "first at line 1"]),
    # stages that keep more than a round has
    (
        "stage-keeps-more-than-offspring",
        "algorithm: {name: evopress, params: {offspring: 4, stages: [[16, 512], [1, 2048]]}}",
        "algorithm.params.stages",
        ["stage 1 keeps 16 survivors", "offspring = 4"],
    ),
    (
        "preset-stage-keeps-more-than-offspring",
        "algorithm: {name: evopress, preset: sparsity, params: {offspring: 4}}",
        "algorithm.params.stages",
        ["stage 1 keeps 8 survivors", "offspring = 4"],
    ),
    (
        "stage-keeps-more-than-samples",
        "algorithm: {name: random-sh, params: {samples: 2, stages: [[4, 512], [1, 2048]]}}",
        "algorithm.params.stages",
        ["stage 1 keeps 4 survivors", "samples = 2"],
    ),
]


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch):
    """The machine's own OPTUNA_STORAGE / MLFLOW_TRACKING_URI must not leak into these tests."""
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    monkeypatch.delenv(ENV_TRACKING, raising=False)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `pressroom ARGS` in this process through the console script's entry point (`main`).

    Returns (exit code, stdout, stderr). Two tests below run the installed script itself; the
    rest save its start-up time, since the path from `main` on is the same.
    """

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["pressroom", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return int(exited.value.code or 0), captured.out, captured.err

    return run


def _one_line(text: str, source: str = "bad.yaml") -> str:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, source=source)
    assert len(caught.value.lines) == 1, caught.value.lines
    assert str(caught.value) == caught.value.lines[0]
    return caught.value.lines[0]


@pytest.mark.parametrize(("text", "key", "fragments"), [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_spec_is_one_line_naming_its_key(text, key, fragments):
    line = _one_line(text)
    assert line.startswith(f"bad.yaml: {key}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_the_command_line_prints_the_same_single_lines(tmp_path, run_cli):
    paths = []
    for name, text, _, _ in MALFORMED:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        paths.append(path)
    # A narrow terminal: rich must not wrap a long message onto a second line.
    result = run_cli("validate", *map(str, paths), env={"COLUMNS": "40"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(MALFORMED), result.stderr
    for path, (_, text, key, _) in zip(paths, MALFORMED, strict=True):
        expected = _one_line(text, source=str(path))
        assert [line for line in lines if line.startswith(f"{path}: ")] == [expected]
        assert expected.startswith(f"{path}: {key}: ")


def test_errors_in_several_keys_give_one_line_each():
    with pytest.raises(SpecError) as caught:
        load_spec_text("seed: -1\nworkers: {count: 0}\ntask: seq2seq\n")
    assert [line.split(": ")[1] for line in caught.value.lines] == ["task", "workers.count", "seed"]


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "absent.yaml")
    assert caught.value.lines == [f"{tmp_path / 'absent.yaml'}: cannot read the spec (No such file or directory)"]


def test_an_unset_variable_in_storage_surfaces_when_the_url_is_used(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("PRESSROOM_TEST_UNSET", raising=False)
    text = "storage: postgresql+psycopg://me:${PRESSROOM_TEST_UNSET}@db:5432/optuna\nmlflow: {enabled: false}\n"
    spec = load_spec_text(text)  # valid anywhere: the variable is read where the search runs
    with pytest.raises(SpecError) as caught:
        spec.storage_url()
    assert caught.value.lines == ["storage: environment variable PRESSROOM_TEST_UNSET is referenced but not set"]
    monkeypatch.setenv("PRESSROOM_TEST_UNSET", SECRET)
    assert spec.storage_url() == f"postgresql+psycopg://me:{SECRET}@db:5432/optuna"

    monkeypatch.delenv("PRESSROOM_TEST_UNSET")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code, _, err = cli("search", str(path))
    assert (code, err.splitlines()) == (2, caught.value.lines)


def test_an_unset_variable_in_the_tracking_uri_names_its_key(monkeypatch):
    monkeypatch.delenv("PRESSROOM_TEST_UNSET", raising=False)
    spec = load_spec_text("mlflow: {tracking_uri: 'http://u:${PRESSROOM_TEST_UNSET}@mlflow:5000'}")
    with pytest.raises(SpecError, match=r"^mlflow\.tracking_uri: environment variable PRESSROOM_TEST_UNSET "):
        spec.tracking_uri()


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path, monkeypatch):
    path = tmp_path / "spec.yaml"
    path.write_text("storage: sqlite:///file.db\nmlflow: {tracking_uri: http://file:5000}\nseed: 3\n")
    assert load_spec_text("").storage == DEFAULT_STORAGE
    assert load_spec_text("").mlflow.tracking_uri is None
    spec = read_spec(path)
    assert (spec.storage, spec.mlflow.tracking_uri, spec.seed) == ("sqlite:///file.db", "http://file:5000", 3)

    monkeypatch.setenv(ENV_STORAGE, "sqlite:///env.db")
    monkeypatch.setenv(ENV_TRACKING, "http://env:5000")
    spec = read_spec(path)
    assert (spec.storage, spec.mlflow.tracking_uri) == ("sqlite:///env.db", "http://env:5000")

    flags = {"storage": "sqlite:///flag.db", "seed": 9, "study": "flagged", "workers.count": 5, "cache_dir": None}
    spec = read_spec(path, **flags, **{"mlflow.tracking_uri": "http://flag:5000"})
    assert (spec.storage, spec.mlflow.tracking_uri) == ("sqlite:///flag.db", "http://flag:5000")
    assert (spec.seed, spec.study_name, spec.workers.count) == (9, "flagged", 5)
    assert spec.cache_dir == "~/.cache/pressroom"  # a flag left out (None) keeps the file's value


def test_the_command_line_flag_beats_the_environment_which_beats_the_file(tmp_path, cli, monkeypatch):
    # Each layer names a different unset variable, so the one-line error tells which layer won,
    # and nothing is ever started.
    path = tmp_path / "spec.yaml"
    path.write_text("storage: sqlite:///${PRESSROOM_FILE_VAR}.db\nmlflow: {enabled: false}\n")
    unset = "storage: environment variable {} is referenced but not set\n"
    assert cli("search", str(path)) == (2, "", unset.format("PRESSROOM_FILE_VAR"))
    monkeypatch.setenv(ENV_STORAGE, "sqlite:///${PRESSROOM_ENV_VAR}.db")
    assert cli("search", str(path)) == (2, "", unset.format("PRESSROOM_ENV_VAR"))
    flag = "sqlite:///${PRESSROOM_FLAG_VAR}.db"
    assert cli("search", str(path), "--storage", flag) == (2, "", unset.format("PRESSROOM_FLAG_VAR"))


def test_an_override_into_a_scalar_is_one_line():
    with pytest.raises(SpecError) as caught:
        load_spec_text("workers: 3", overrides={"workers.count": 2})
    assert caught.value.lines == ["workers: expected a mapping to set 'workers.count', got 3"]


def test_public_dict_and_validate_redact_passwords(tmp_path, cli, monkeypatch):
    text = (
        f"storage: postgresql+psycopg://pressroom:{SECRET}@db:5432/optuna\n"
        f"mlflow: {{tracking_uri: 'https://me:{SECRET}@mlflow:5000'}}\n"
    )
    public = load_spec_text(text).public_dict()
    assert public["storage"] == "postgresql+psycopg://pressroom:***@db:5432/optuna"
    assert public["mlflow"]["tracking_uri"] == "https://me:***@mlflow:5000"
    assert SECRET not in repr(public)

    monkeypatch.setenv(ENV_STORAGE, f"postgresql://u:{SECRET}@envhost/optuna")
    assert load_spec_text("").public_dict()["storage"] == "postgresql://u:***@envhost/optuna"
    with pytest.raises(SpecError) as caught:  # a typo that makes it no URL at all
        load_spec_text("", overrides={"storage": f"postgresql:/u:{SECRET}@db/optuna"})
    assert caught.value.lines == [
        "<spec>: storage: not a database URL; write e.g. 'sqlite:///pressroom.db' (got 'postgresql:/u:***@db/optuna')"
    ]

    monkeypatch.delenv(ENV_STORAGE)
    path = tmp_path / "secret.yaml"
    path.write_text(text)
    code, out, err = cli("validate", str(path))
    assert code == 0, err
    assert "storage: postgresql+psycopg://pressroom:***@db:5432/optuna" in out
    assert SECRET not in out + err


BASE = {
    "model": {"name": "pressroom:tiny-llama"},
    "compression": {"scheme": "sparsity", "target": 0.5},
    "data": {"seq_len": 64, "calibration_tokens": 8192, "heldout_tokens": 1024, "stats_tokens": 1024},
    "algorithm": {"name": "evopress", "params": {"generations": 4}},
    "seed": 1,
}


def _fingerprint(**changes: object) -> str:
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if key:
            raw.setdefault(section, {})[key] = value
        else:
            raw[section] = value
    return Spec.model_validate(raw).fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"storage": "postgresql://u:p@db/optuna"},
        {"study": "another-name"},
        {"workers.count": 7},
        {"workers.ray_address": "10.0.0.1:6379"},
        {"mlflow.enabled": False},
        {"mlflow.tracking_uri": "http://mlflow:5000"},
        {"cache_dir": "/elsewhere"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_fingerprint_ignores_where_and_how_a_search_runs(change):
    assert _fingerprint(**change) == _fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"model.name": "pressroom:tiny-gpt2"},
        {"compression.target": 0.6},
        {"compression.compressor": "magnitude"},
        {"data.seq_len": 128},
        {"algorithm": {"name": "random"}},
        {"algorithm.params": {"generations": 5}},
        {"seed": 2},
        {"compression.tie_fused": True},
    ],
    ids=lambda change: next(iter(change)),
)
def test_fingerprint_changes_with_what_is_searched(change):
    assert _fingerprint(**change) != _fingerprint()


def test_fingerprint_is_stable_across_processes_and_default_spellings():
    spelled_out = _fingerprint(**{"compression.compressor": "wanda", "algorithm.params": {"generations": 4}})
    assert spelled_out == _fingerprint()
    assert _fingerprint(**{"compression.tie_fused": False}) == _fingerprint()  # searches before the option
    assert len(_fingerprint()) == 16


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    spec = load_spec(path)
    assert spec.public_dict()["study"] == spec.study_name


def test_the_installed_script_accepts_every_example(run_cli, monkeypatch):
    assert len(EXAMPLES) >= 3
    monkeypatch.delenv("PGPASSWORD", raising=False)  # the cluster example names it: not needed to validate
    result = run_cli("validate", "--quiet", *map(str, EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}: valid" for path in EXAMPLES]


def test_help_lists_the_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("validate", "build-db", "search", "status"):
        assert command in out


def test_bitwidth_ties_fused_projections_unless_told_not_to():
    bits = {"scheme": "bitwidth", "target": 4.0, "levels": {"group_size": 16}}
    tied = _fingerprint(compression=bits)
    assert _fingerprint(compression={**bits, "tie_fused": True}) == tied
    assert _fingerprint(compression={**bits, "tie_fused": False}) != tied
    granularity = {
        value: Spec.model_validate({"compression": {**bits, "tie_fused": value}}).compression.space_granularity()
        for value in (None, True, False)
    }
    assert granularity == {None: "fused", True: "fused", False: "layer"}


def test_a_symmetric_grid_is_another_search_and_database_but_asymmetric_keeps_the_old_keys():
    bits = {"scheme": "bitwidth", "target": 4.0, "levels": {"group_size": 16}}
    before = _fingerprint(compression=bits)
    assert _fingerprint(compression={**bits, "levels": {"group_size": 16, "symmetric": False}}) == before
    assert _fingerprint(compression={**bits, "levels": {"group_size": 16, "symmetric": True}}) != before
    params = {
        value: Spec.model_validate(
            {"compression": {**bits, "levels": {"group_size": 16, "symmetric": value}}}
        ).compression.database_params()
        for value in (False, True)
    }
    assert params == {False: {"group_size": 16}, True: {"group_size": 16, "symmetric": True}}
    sparsity = Spec.model_validate({"compression": {"target": 0.5}}).compression
    assert sparsity.space_granularity() == "layer"


def test_validate_notes_that_an_asymmetric_bitwidth_checkpoint_loads_in_vllm_not_transformers(tmp_path, cli):
    for symmetric in (False, True):
        levels = {"group_size": 16, "symmetric": symmetric}
        path = tmp_path / f"bits-{symmetric}.yaml"
        path.write_text(yaml.safe_dump({"compression": {"scheme": "bitwidth", "target": 4.0, "levels": levels}}))
        code, _, err = cli("validate", str(path))
        assert code == 0
        noted = "loads but transformers' from_pretrained does not" in " ".join(err.split())
        assert noted is not symmetric, err
