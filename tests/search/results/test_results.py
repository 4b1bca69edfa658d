"""Using a search's results: the best profile, exports and their readers, and `apply`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
import yaml
from optuna.trial import TrialState, create_trial

from evaluators import build_space, load_model, take_inventory
from evaluators.config import CompressionSpec, ModelSpec
from evaluators.saving.export import PROFILE_FILE, compressed_evaluator
from search import ResultsError, find_best, load_best
from search.results.best import FROM_SEARCH, FROM_TRIAL, evaluator_spec_from, record_space
from search.results.exports import (
    FORMATS,
    LLMC_MODIFIERS,
    VALUE_MEANINGS,
    layer_values,
    profile_document,
    read_profile,
    write_profile,
)
from search.spec.config import load_spec_text
from search.storage.study import BEST, HELDOUT, SPACE, SPEC, SearchStudy, connect
from spaces import BitwidthScheme, Profile, Space
from tests.search.conftest import tiny_search

SPARSITY = {"scheme": "sparsity", "target": 0.5, "compressor": "magnitude", "levels": {"max_levels": 4}}
SPACES = {
    "sparsity-layer": ("pressroom:tiny-llama", SPARSITY),
    "sparsity-block": ("pressroom:tiny-gpt2", {**SPARSITY, "granularity": "block"}),
    "bitwidth": (
        "pressroom:tiny-llama",
        {"scheme": "bitwidth", "target": 4.0, "levels": {"choices": [2, 3, 4, 6, 16], "group_size": 16}},
    ),
    "drop-block": ("pressroom:tiny-llama", {"scheme": "drop", "target": 0.5}),
    "drop-attn": ("pressroom:tiny-llama", {"scheme": "drop", "target": 0.5, "drop_unit": "attn"}),
    "drop-sub-blocks": ("pressroom:tiny-llama", {"scheme": "drop", "target": 0.25, "drop_unit": "mlp"}),
    "mixed": (
        "pressroom:tiny-llama",
        {"scheme": "mixed", "target": 0.5, "compressor": "magnitude", "levels": {"sparsities": [0.5, 0.7]}},
    ),
}


def _space(kind: str, compression: dict[str, Any] | None = None) -> Any:
    """A real model's search space, from its inventory (no compression database needed)."""
    model, default = SPACES[kind]
    compression = compression or default
    loaded = load_model(ModelSpec(name=model), "auto")
    spec = CompressionSpec.model_validate(compression)
    return build_space(take_inventory(loaded.model, spec), spec, loaded.fingerprint)


def _evaluator(make_evaluator: Any, cache_dir: Path) -> Any:
    """The evaluator of `tiny_search`'s spec (the same database as `pressroom apply --spec` uses)."""
    spec = tiny_search(cache_dir)
    return make_evaluator(**{key: spec[key] for key in ("model", "compression", "data", "seed")})


def _spec(cache_dir: Path, **overrides: Any) -> Any:
    """`tiny_search`'s spec (with overrides), validated."""
    return load_spec_text(yaml.safe_dump(tiny_search(cache_dir, **overrides)))


def _make_study(url: str, name: str, space: Any, spec: dict[str, Any], rows: list[tuple[Any, ...]]) -> int:
    """A study as a search records it: one trial per row (state, levels, final value, stage values)."""
    storage = connect(url)
    study = SearchStudy.open(storage, name, fingerprint="test", attrs={SPEC: spec, SPACE: record_space(space)})
    for member, (state, levels, value, stages) in enumerate(rows):
        attrs = {"member": member, "generation": 1, "algorithm": "evopress", "levels": [int(v) for v in levels]}
        template = create_trial(state=state, value=value, user_attrs=attrs, intermediate_values=stages)
        storage.create_new_trial(study.id, template_trial=template)
    return study.id


# --- best ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_best_is_the_best_completed_final_stage_trial_never_a_pruned_or_failed_one(
    postgres_url, make_evaluator, cache_dir
):
    space = _evaluator(make_evaluator, cache_dir).space
    rng = np.random.default_rng(0)
    profiles = [space.sample_array(rng) for _ in range(5)]
    rows = [
        (TrialState.COMPLETE, profiles[0], 0.30, {256: 0.31, 512: 0.30}),
        (TrialState.COMPLETE, profiles[1], 0.20, {256: 0.22, 512: 0.20}),  # the best completed one
        (TrialState.PRUNED, profiles[2], None, {256: 0.01}),  # looked better on the first stage only
        (TrialState.FAIL, profiles[3], None, {256: 0.001}),
        (TrialState.COMPLETE, profiles[4], 0.25, {256: 0.21, 512: 0.25}),
    ]
    spec = _spec(cache_dir).public_dict()
    study_id = _make_study(postgres_url, "best-of-trials", space, spec, rows)

    best = find_best(postgres_url, "best-of-trials")
    assert best.source == FROM_TRIAL
    assert best.fitness == 0.20 and best.trial == 1
    assert best.profile == space.from_array(profiles[1])
    assert load_best(postgres_url, "best-of-trials") == best.profile

    # once the search has finished, its own answer wins, with the trial that measured it
    storage = connect(postgres_url)
    levels = [int(v) for v in profiles[4]]
    storage.set_study_user_attr(study_id, BEST, {"levels": levels, "fitness": 0.25, "algorithm": "evopress"})
    answer = find_best(storage, "best-of-trials")
    assert (answer.source, answer.trial, answer.fitness) == (FROM_SEARCH, 4, 0.25)
    assert answer.profile == space.from_array(profiles[4])
    assert answer.heldout is None


def test_best_shows_the_held_out_fitness_and_perplexity_of_a_finished_search(
    make_evaluator, cache_dir, run_cli, tmp_path
):
    space = _evaluator(make_evaluator, cache_dir).space
    levels = space.sample_array(np.random.default_rng(3))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    rows = [(TrialState.COMPLETE, levels, 0.2, {})]
    study_id = _make_study(url, "finished", space, _spec(cache_dir).public_dict(), rows)
    report = {"uniform": {"fitness": 0.3, "perplexity": 9.5}, "best": {"fitness": 0.21, "perplexity": 8.25}}
    storage = connect(url)
    storage.set_study_user_attr(study_id, BEST, {"levels": [int(v) for v in levels], "fitness": 0.2})
    storage.set_study_user_attr(study_id, HELDOUT, report)
    assert find_best(url, "finished").heldout == report["best"]
    shown = run_cli("best", "finished", "--storage", url)
    assert shown.returncode == 0, shown.stderr
    assert "held-out: fitness 0.21, perplexity 8.25" in shown.stderr
    document = json.loads(shown.stdout)
    assert Profile.from_dict(document) == space.from_array(levels)
    assert document["values"] == {
        "meaning": VALUE_MEANINGS["sparsity"],
        "layers": layer_values(space, space.from_array(levels)),
    }


@pytest.mark.postgres
def test_an_empty_or_unknown_study_gives_a_clear_error(postgres_url, make_evaluator, cache_dir, run_cli):
    space = _evaluator(make_evaluator, cache_dir).space
    pruned = [(TrialState.PRUNED, space.sample_array(np.random.default_rng(1)), None, {256: 0.1})]
    _make_study(postgres_url, "only-pruned", space, _spec(cache_dir).public_dict(), pruned)
    with pytest.raises(ResultsError, match=r"no completed final-stage trial yet \(pruned 1\)"):
        find_best(postgres_url, "only-pruned")
    with pytest.raises(ResultsError, match=r"no study 'no-such-study' in this storage; studies: \[.*'only-pruned'"):
        find_best(postgres_url, "no-such-study")

    for study in ("only-pruned", "no-such-study"):
        result = run_cli("best", study, "--storage", postgres_url)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_best_and_export_commands_write_what_the_readers_read(
    postgres_url, make_evaluator, cache_dir, run_cli, tmp_path
):
    space = _evaluator(make_evaluator, cache_dir).space
    levels = space.sample_array(np.random.default_rng(2))
    _make_study(
        postgres_url, "exported", space, _spec(cache_dir).public_dict(), [(TrialState.COMPLETE, levels, 0.1, {})]
    )
    expected = space.from_array(levels)

    shown = run_cli("best", "exported", "--storage", postgres_url)
    assert shown.returncode == 0, shown.stderr
    assert Profile.from_json(shown.stdout) == expected
    assert "fitness 0.1 (trial 0, best completed trial so far" in shown.stderr
    as_yaml = run_cli("best", "exported", "--storage", postgres_url, "--format", "yaml", "-o", str(tmp_path / "b.yaml"))
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert Profile.from_dict(yaml.safe_load((tmp_path / "b.yaml").read_text())) == expected
    table = run_cli("best", "exported", "--storage", postgres_url, "--format", "table")
    assert table.returncode == 0 and space.names[0] in table.stdout, table.stderr

    for fmt, spec in FORMATS.items():
        path = tmp_path / f"profile-{fmt}{spec.suffix}"
        result = run_cli("export", "exported", "--storage", postgres_url, "--format", fmt, "-o", str(path))
        assert result.returncode == 0, result.stderr
        assert read_profile(path.read_text(), space, fmt) == expected, fmt
    bad = run_cli("export", "exported", "--storage", postgres_url, "--format", "onnx")
    assert bad.returncode == 2 and "allowed: json, map, llm-compressor, evopress" in bad.stderr


# --- export formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SPACES))
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_export_format_round_trips(kind, fmt):
    space = _space(kind)
    if fmt == "llm-compressor" and space.scheme.name in ("drop", "mixed"):
        with pytest.raises(ValueError, match=r"llm-compressor has no recipe for dropping|one mask structure"):
            write_profile(space.sample(np.random.default_rng(0)), space, fmt)
        return
    for seed in range(3):
        profile = space.sample(np.random.default_rng(seed))
        text = write_profile(profile, space, fmt, compressor="sparsegpt" if space.scheme.name == "sparsity" else None)
        assert read_profile(text, space, fmt) == profile


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_the_best_document_says_what_each_layers_level_means(kind):
    space = _space(kind)
    profile = space.sample(np.random.default_rng(0))
    document = profile_document(profile, space)
    assert Profile.from_dict(document) == profile  # apply and the readers take it as a bare profile
    assert document["values"]["meaning"] == VALUE_MEANINGS[space.scheme.name]
    values = document["values"]["layers"]
    assert list(values) == [layer.name for layer in space.layers]
    expected = layer_values(space, profile)
    if space.scheme.name == "drop":
        assert values == {name: "dropped" if v else "kept" for name, v in expected.items()}
        dropped = sum(len(unit.layers) for unit, v in zip(space.units, space.to_array(profile), strict=True) if v)
        assert list(values.values()).count("dropped") == dropped
    else:
        assert values == expected
    if space.scheme.name == "bitwidth":
        assert set(values.values()) <= {2, 3, 4, 6, 16}
    if space.scheme.name == "sparsity":
        assert all(0.0 <= v < 1.0 for v in values.values())


def test_the_llm_compressor_recipe_has_the_shape_llm_compressor_reads():
    space = _space("sparsity-layer")
    profile = space.sample(np.random.default_rng(0))
    recipe = yaml.safe_load(write_profile(profile, space, "llm-compressor", compressor="sparsegpt"))
    ((stage, groups),) = recipe.items()
    assert stage.endswith("_stage")  # llm-compressor finds stages and modifier groups by these suffixes
    ((group, modifiers),) = groups.items()
    assert group.endswith("_modifiers")
    args = modifiers["SparseGPTModifier"]
    assert args["targets"] == [layer.name for layer in space.layers]  # model order
    values = layer_values(space, profile)
    assert args["sparsity"] == [values[name] for name in args["targets"]]
    assert all(0.0 <= s < 1.0 for s in args["sparsity"])

    bits = _space("bitwidth")
    profile = bits.sample(np.random.default_rng(1))
    recipe = yaml.safe_load(write_profile(profile, bits, "llm-compressor", compressor="gptq"))
    groups = recipe["pressroom_stage"]["quantization_modifiers"][LLMC_MODIFIERS["gptq"]]["config_groups"]
    values = layer_values(bits, profile)
    for group in groups.values():
        assert {values[name] for name in group["targets"]} == {group["weights"]["num_bits"]}
        assert group["weights"]["strategy"] == "group" and group["weights"]["type"] == "int"
    dense = [name for name, b in values.items() if b == 16]
    assert not any(name in g["targets"] for g in groups.values() for name in dense)  # 16 bits stays dense
    assert all(group["weights"]["symmetric"] is False for group in groups.values())  # the default grid
    recipe = yaml.safe_load(write_profile(profile, bits, "llm-compressor", compressor="gptq", symmetric=True))
    groups = recipe["pressroom_stage"]["quantization_modifiers"][LLMC_MODIFIERS["gptq"]]["config_groups"]
    assert all(group["weights"]["symmetric"] is True for group in groups.values())


def test_the_recipe_uses_whole_groups_everywhere_and_tied_projections_share_their_bits():
    bits = _space("bitwidth")
    assert bits.granularity == "fused"  # the default for bitwidth: engines fuse q/k/v and gate/up
    widths = {layer.name: layer.shape[1] for layer in bits.layers}
    assert set(widths.values()) == {64, 176}
    for seed in range(5):
        profile = bits.sample(np.random.default_rng(seed))
        recipe = yaml.safe_load(write_profile(profile, bits, "llm-compressor", compressor="gptq"))
        groups = recipe["pressroom_stage"]["quantization_modifiers"][LLMC_MODIFIERS["gptq"]]["config_groups"]
        for group in groups.values():
            assert group["weights"]["group_size"] == 16
            assert all(widths[name] % 16 == 0 for name in group["targets"])  # what llm-compressor checks
        values = layer_values(bits, profile)
        for block in range(4):
            attn, mlp = f"model.layers.{block}.self_attn.", f"model.layers.{block}.mlp."
            assert len({values[attn + p] for p in ("q_proj", "k_proj", "v_proj")}) == 1
            assert values[mlp + "gate_proj"] == values[mlp + "up_proj"]
        assert read_profile(write_profile(profile, bits, "llm-compressor"), bits, "llm-compressor") == profile


def test_layers_no_wider_than_the_group_are_quantised_per_row_and_a_ragged_group_is_refused():
    compression = SPACES["bitwidth"][1]
    wide = _space("bitwidth", {**compression, "levels": {"choices": [2, 3, 4, 6, 16], "group_size": 88}})
    recipe = yaml.safe_load(write_profile(wide.sample(np.random.default_rng(0)), wide, "llm-compressor"))
    groups = recipe["pressroom_stage"]["quantization_modifiers"][LLMC_MODIFIERS["gptq"]]["config_groups"]
    for group in groups.values():
        per_row = all(name.endswith(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"))
                      for name in group["targets"])  # fmt: skip
        assert group["weights"] == (
            {"num_bits": group["weights"]["num_bits"], "type": "int", "symmetric": False, "strategy": "channel"}
            if per_row
            else {"num_bits": group["weights"]["num_bits"], "type": "int", "symmetric": False, "strategy": "group",
                  "group_size": 88}
        )  # fmt: skip
    ragged = Space(wide.layers, BitwidthScheme(4.0, choices=(2, 4, 16), group_size=32), model=wide.model)
    with pytest.raises(ValueError, match=re.escape("group size 32 does not divide model.layers.0.mlp.down_proj's 176")):
        write_profile(ragged.sample(np.random.default_rng(0)), ragged, "llm-compressor")
    with pytest.raises(ValueError, match=re.escape("compression.levels.group_size: group size 32 does not divide")):
        _space("bitwidth", {**compression, "levels": {"choices": [2, 3, 4, 6, 16], "group_size": 32}})


def test_the_evopress_configuration_is_one_line_per_unit_or_block():
    space = _space("sparsity-layer")
    profile = space.sample(np.random.default_rng(0))
    lines = write_profile(profile, space, "evopress").splitlines()
    assert lines == [f"{name}: {profile[name]}" for name in space.names]
    drop = _space("drop-attn")
    profile = drop.sample(np.random.default_rng(0))
    lines = write_profile(profile, drop, "evopress").splitlines()
    dropped = {drop.units[i].block for i, v in enumerate(drop.to_array(profile)) if v}
    assert lines == ["attn" if block in dropped else "none" for block in range(4)]


@pytest.mark.parametrize(
    ("fmt", "edit", "message"),
    [
        ("map", lambda t: json.dumps({k: v + 0.01 for k, v in json.loads(t).items()}), "is not one of its levels"),
        ("map", lambda t: json.dumps({"model.layers.0.mlp.up_proj": 0.5}), "missing"),
        ("evopress", lambda t: "model.layers.9.mlp.up_proj: 1\n", "line 1 of the EvoPress configuration"),
        ("llm-compressor", lambda t: "just: text\n", "not an llm-compressor recipe"),
        ("json", lambda t: t.replace('"pressroom.profile"', '"other"'), "not a pressroom profile"),
    ],
)
def test_a_bad_export_file_gives_a_clear_error(fmt, edit, message):
    space = _space("sparsity-layer")
    text = write_profile(space.sample(np.random.default_rng(0)), space, fmt)
    with pytest.raises(ValueError, match=message):
        read_profile(edit(text), space, fmt)


def test_an_export_of_another_models_profile_is_refused():
    llama, gpt2 = _space("sparsity-layer"), _space("sparsity-block")
    with pytest.raises(ValueError, match="the profile was made for model"):
        write_profile(llama.sample(np.random.default_rng(0)), gpt2, "json")
    text = write_profile(llama.sample(np.random.default_rng(0)), llama, "map")
    with pytest.raises(ValueError, match="the layers do not match this model's"):
        read_profile(text, gpt2, "map")


# --- apply ---------------------------------------------------------------------------------------


def test_apply_writes_a_model_that_transformers_loads_back(make_evaluator, cache_dir, write_spec, run_cli, tmp_path):
    evaluator = _evaluator(make_evaluator, cache_dir)
    profile = evaluator.space.sample(np.random.default_rng(5))
    (tmp_path / "profile.json").write_text(profile.to_json())
    out = tmp_path / "compressed"
    result = run_cli("apply", str(tmp_path / "profile.json"), "--spec", str(write_spec()), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert {"model.safetensors", "config.json", "tokenizer.json", PROFILE_FILE} <= {p.name for p in out.iterdir()}
    assert Profile.from_json((out / PROFILE_FILE).read_text()) == profile

    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    evaluator.apply(profile)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, evaluator.model(input_ids=ids).logits)
    for name, module in evaluator.inventory.modules.items():  # the pruned weights are zeros there
        assert torch.equal(loaded.get_submodule(name).weight, module.weight)

    again = run_cli("apply", str(tmp_path / "profile.json"), "--spec", str(write_spec()), "--out", str(out))
    assert again.returncode == 2 and "is not an empty folder" in again.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model": {"name": "pressroom:tiny-gpt2"}},
            r"the profile was made for model '\w+', but 'pressroom:tiny-gpt2'",
        ),
        (
            {"compression": {"scheme": "bitwidth", "target": 4.0, "compressor": "rtn", "levels": {"group_size": 16}}},
            "the profile uses scheme 'sparsity' with target 0.5, but the spec compresses with 'bitwidth' to target 4.0",
        ),
        ({"compression": {**SPARSITY, "target": 0.6}}, "with target 0.5, but the spec compresses with 'sparsity' to"),
    ],
)
def test_apply_to_the_wrong_model_or_scheme_is_a_clear_error(
    change, message, make_evaluator, cache_dir, write_spec, run_cli, tmp_path
):
    profile = _evaluator(make_evaluator, cache_dir).space.sample(np.random.default_rng(6))
    (tmp_path / "profile.json").write_text(profile.to_json())
    spec = write_spec("other.yaml", **change)
    result = run_cli("apply", str(tmp_path / "profile.json"), "--spec", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "out").exists()


def test_apply_with_other_scheme_parameters_or_granularity_names_the_difference(make_evaluator, cache_dir):
    profile = _evaluator(make_evaluator, cache_dir).space.sample(np.random.default_rng(7))
    spec = _spec(cache_dir, compression={**SPARSITY, "levels": {"max_levels": 2}}).evaluator_spec()
    with pytest.raises(ValueError, match=r"the profile uses scheme sparsity target 0.5 \(step=\d+, max_levels=4"):
        compressed_evaluator(spec, profile)
    spec = _spec(cache_dir, compression={**SPARSITY, "granularity": "block"}).evaluator_spec()
    with pytest.raises(ValueError, match="the profile has 'layer' granularity, but this space has 'block'"):
        compressed_evaluator(spec, profile)


def test_apply_needs_to_know_the_model(tmp_path, run_cli):
    profile = Profile({"a": 0}, scheme={"name": "sparsity", "target": 0.5}, model="m")
    (tmp_path / "p.json").write_text(profile.to_json())
    result = run_cli("apply", str(tmp_path / "p.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--spec SPEC, or --study STUDY" in result.stderr
    (tmp_path / "bad.json").write_text("{}")
    result = run_cli("apply", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out"), "--spec", "x.yaml")
    assert result.returncode == 2 and "not a pressroom profile" in result.stderr


@pytest.mark.postgres
def test_best_and_status_read_quality_vs_latency_studies(postgres_url, make_evaluator, cache_dir, run_cli):
    space = _evaluator(make_evaluator, cache_dir).space
    rng = np.random.default_rng(1)
    profiles = [space.sample_array(rng) for _ in range(3)]
    storage = connect(postgres_url)
    spec = _spec(cache_dir).public_dict()
    study = SearchStudy.open(
        storage, "two-objectives", fingerprint="test", attrs={SPEC: spec, SPACE: record_space(space)},
        metrics=("fitness", "latency"),
    )  # fmt: skip
    for member, (levels, values) in enumerate(zip(profiles, [(0.3, 0.7), (0.2, 0.9), (0.4, 0.6)], strict=True)):
        attrs = {"member": member, "generation": 1, "algorithm": "evopress", "levels": [int(v) for v in levels]}
        storage.create_new_trial(study.id, template_trial=create_trial(values=list(values), user_attrs=attrs))
    best = find_best(postgres_url, "two-objectives")
    assert best.fitness == 0.2 and best.profile == space.from_array(profiles[1])
    status = run_cli("status", "two-objectives", "--storage", postgres_url)
    assert status.returncode == 0, status.stderr
    assert "0.2" in status.stdout


def test_a_spec_recorded_before_tied_units_keeps_a_level_per_layer():
    old = {"compression": {"scheme": "bitwidth", "target": 4.0, "levels": {"group_size": 16}}}
    assert evaluator_spec_from(old).compression.space_granularity() == "layer"
    new = {"compression": {**old["compression"], "tie_fused": None}}  # what public_dict records now
    assert evaluator_spec_from(new).compression.space_granularity() == "fused"
