"""`Profile`: immutable, hashable, versioned JSON; refused by a space it does not belong to."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spaces_strategies import spaces

from spaces import (
    BitwidthScheme,
    DropScheme,
    Fidelity,
    LayerInfo,
    Profile,
    Space,
    SparsityScheme,
)
from spaces._profile import FORMAT, VERSION

FAST = settings(max_examples=60, deadline=None)

LAYERS = [LayerInfo(f"model.layers.{b}.{n}", (32, 32), 1024, block=b) for b in range(3) for n in ("attn", "mlp")]


def _space(scheme=None, *, granularity: str = "layer", model: str = "org/model-a", layers=LAYERS) -> Space:
    return Space(layers, scheme or SparsityScheme(0.5), granularity=granularity, model=model)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False), st.text(max_size=8)
)
scheme_dicts = st.one_of(
    st.builds(lambda s: s.to_dict(), st.builds(SparsityScheme, st.floats(0.05, 0.95), st.none() | st.integers(1, 99))),
    st.builds(lambda t: BitwidthScheme(t, choices=(2, 3, 4, 8)).to_dict(), st.floats(2, 8)),
    st.builds(lambda t: DropScheme(t).to_dict(), st.floats(0.01, 0.99)),
    st.dictionaries(st.text(max_size=8), st.one_of(json_scalars, st.lists(json_scalars, max_size=3)), max_size=4),
)
profiles = st.builds(
    lambda levels, scheme, model, granularity: Profile(levels, scheme=scheme, model=model, granularity=granularity),
    st.dictionaries(st.text(min_size=1, max_size=20), st.integers(-(2**40), 2**40), max_size=12),
    scheme_dicts,
    st.text(max_size=30),
    st.sampled_from(["layer", "block"]),
)


# --- JSON -----------------------------------------------------------------------------------


@FAST
@given(profiles, st.sampled_from([None, 0, 2]))
def test_json_round_trip(profile, indent):
    text = profile.to_json(indent=indent)
    again = Profile.from_json(text)
    assert again == profile
    assert hash(again) == hash(profile)
    assert list(again) == list(profile)  # unit order kept
    assert again.model == profile.model and again.granularity == profile.granularity
    assert dict(again.scheme) == dict(profile.scheme)
    data = json.loads(text)
    assert data["format"] == FORMAT and data["version"] == VERSION
    assert Profile.from_dict(profile.to_dict()) == profile


@FAST
@given(spaces(max_layers=8, max_levels=4, max_profiles=None), st.integers(0, 2**32 - 1))
def test_a_sampled_profile_survives_json_and_still_fits_its_space(space, seed):
    profile = space.sample(np.random.default_rng(seed))
    again = Profile.from_json(profile.to_json())
    assert again == profile and hash(again) == hash(profile)  # from_array's fast path agrees
    assert all(type(level) is int for level in profile.values())
    space.check(again)
    assert np.array_equal(space.to_array(again), space.to_array(profile))
    for dtype in (np.int8, np.int64, np.float64):
        assert space.from_array(space.to_array(profile).astype(dtype)) == profile
    assert space.is_feasible(again)


def test_numpy_integers_are_stored_as_python_ints():
    profile = Profile({"a": np.int64(3), "b": np.int32(-2)}, scheme={"name": "sparsity"}, model="m")
    assert type(profile["a"]) is int and type(profile["b"]) is int
    assert json.loads(profile.to_json())["levels"] == {"a": 3, "b": -2}


@pytest.mark.parametrize("level", [1.5, "2", None, True, [1]])
def test_levels_must_be_integers(level):
    with pytest.raises(TypeError, match="'a' must be an integer"):
        Profile({"a": level}, scheme={}, model="m")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('"profile"', "must be an object"),
        ('{"levels": {}}', "not a pressroom profile: format is None"),
        ('{"format": "other.profile", "version": 1}', "format is 'other.profile'.*'pressroom.profile'"),
        ('{"format": "pressroom.profile"}', "version None is not supported.*version 1"),
        ('{"format": "pressroom.profile", "version": 2}', "version 2 is not supported"),
        ('{"format": "pressroom.profile", "version": "1"}', "version '1' is not supported"),
        ('{"format": "pressroom.profile", "version": 1, "model": "m"}', r"missing \['scheme', 'levels'\]"),
        (
            '{"format": "pressroom.profile", "version": 1, "model": "m", "scheme": {}, "levels": [1, 2]}',
            "levels must be an object",
        ),
        (
            '{"format": "pressroom.profile", "version": 1, "model": "m", "scheme": {}, "levels": {"a": 1.5}}',
            "level of 'a' must be an integer",
        ),
        (
            '{"format": "pressroom.profile", "version": 1, "model": "m", "scheme": "sparsity", "levels": {}}',
            "scheme must be an object",
        ),
    ],
)
def test_malformed_json_fails_clearly(text, match):
    with pytest.raises(ValueError, match=match):
        Profile.from_json(text)


# --- immutable and hashable ------------------------------------------------------------------


def _profile() -> Profile:
    return Profile({"a": 1, "b": -1}, scheme={"name": "sparsity", "target": 0.5}, model="m")


def test_profile_is_an_immutable_mapping():
    profile = _profile()
    with pytest.raises(TypeError):
        profile["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del profile["a"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        profile.scheme["target"] = 0.9  # type: ignore[index]
    for attribute, value in [("model", "other"), ("granularity", "block"), ("scheme", {}), ("_levels", {})]:
        with pytest.raises(AttributeError):
            setattr(profile, attribute, value)
    with pytest.raises(AttributeError):
        del profile.model
    assert profile == _profile() and profile.model == "m"
    assert not hasattr(profile, "__dict__")  # no room for stray attributes either


def test_profile_does_not_share_state_with_its_inputs():
    levels = {"a": 1, "b": -1}
    scheme = {"name": "sparsity", "target": 0.5}
    profile = Profile(levels, scheme=scheme, model="m")
    levels["a"] = 5
    levels["c"] = 0
    scheme["target"] = 0.9
    assert dict(profile) == {"a": 1, "b": -1}
    assert profile.scheme["target"] == 0.5
    exported = profile.to_dict()
    exported["levels"]["a"] = 7
    exported["scheme"]["target"] = 0.1
    assert profile["a"] == 1 and profile.scheme["target"] == 0.5


def test_profile_is_hashable_and_equality_covers_the_tags():
    a, b = _profile(), Profile({"b": -1, "a": 1}, scheme={"name": "sparsity", "target": 0.5}, model="m")
    assert a == b and hash(a) == hash(b)  # key order does not matter
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"
    assert a != Profile({"a": 1, "b": -1}, scheme={"name": "sparsity", "target": 0.5}, model="other")
    assert a != Profile({"a": 1, "b": -1}, scheme={"name": "sparsity", "target": 0.6}, model="m")
    assert a != Profile({"a": 1, "b": -1}, scheme={"name": "sparsity", "target": 0.5}, model="m", granularity="block")
    assert a != Profile({"a": 1, "b": 0}, scheme={"name": "sparsity", "target": 0.5}, model="m")
    assert a != {"a": 1, "b": -1}  # a plain dict lacks the tags
    assert dict(a) == {"a": 1, "b": -1}


@FAST
@given(profiles)
def test_copies_and_pickles_are_equal(profile):
    for other in (copy.copy(profile), copy.deepcopy(profile), pickle.loads(pickle.dumps(profile))):
        assert other == profile and hash(other) == hash(profile)


def test_repr_is_short():
    profile = Profile({f"u{i}": 0 for i in range(100)}, scheme={"name": "bitwidth", "target": 3.0}, model="m")
    text = repr(profile)
    assert text.startswith("Profile(bitwidth@3.0") and "(100 units)" in text and len(text) < 120


# --- belonging to a space ---------------------------------------------------------------------


def test_a_profile_for_another_model_is_refused_naming_both():
    source = _space(model="org/model-a")
    profile = source.uniform()
    assert profile is not None
    target = _space(model="org/model-b")
    for call in (target.check, target.to_array, target.layer_settings, target.switch_pairs):
        with pytest.raises(ValueError, match=r"'org/model-a'.*'org/model-b'"):
            call(profile)
    assert not target.is_feasible(profile)


@pytest.mark.parametrize(
    ("made_with", "loaded_into", "names"),
    [
        (SparsityScheme(0.5), SparsityScheme(0.6), ("0.5", "0.6")),
        (SparsityScheme(0.5, step=8), SparsityScheme(0.5, step=16), ("step=8", "step=16")),
        (SparsityScheme(0.5, max_levels=4), SparsityScheme(0.5), ("max_levels=4", "max_levels=8")),
        (
            BitwidthScheme(4.0, choices=(2, 4, 8)),
            BitwidthScheme(4.0, choices=(2, 3, 4, 5, 6, 8)),
            ("[2, 4, 8]", "[2, 3"),
        ),
        (BitwidthScheme(4.0), BitwidthScheme(4.0, exact_budget=False), ("exact_budget=True", "exact_budget=False")),
        (SparsityScheme(0.5), BitwidthScheme(4.0), ("sparsity", "bitwidth")),
        (DropScheme(0.5), SparsityScheme(0.5), ("drop", "sparsity")),
    ],
)
def test_a_profile_for_another_scheme_is_refused_naming_both(made_with, loaded_into, names):
    profile = _space(made_with).sample(np.random.default_rng(0))
    target = _space(loaded_into)
    for call in (target.check, target.to_array):
        with pytest.raises(ValueError, match="scheme") as info:
            call(profile)
        message = str(info.value)
        assert all(name in message for name in names), message
        assert message.index(names[0]) < message.index(names[1]), "the profile's scheme comes first"


@pytest.mark.parametrize("scheme", [SparsityScheme(0.5), BitwidthScheme(4.0), DropScheme(0.5)])
def test_a_profile_for_another_granularity_is_refused_naming_both(scheme):
    per_block = _space(scheme, granularity="block")
    per_layer = _space(scheme, granularity="layer")
    block_profile = per_block.sample(np.random.default_rng(1))
    layer_profile = per_layer.sample(np.random.default_rng(1))
    for profile, space, made, here in [
        (block_profile, per_layer, "block", "layer"),
        (layer_profile, per_block, "layer", "block"),
    ]:
        for call in (space.check, space.to_array):
            with pytest.raises(ValueError, match=f"'{made}' granularity.*'{here}'"):
                call(profile)


def test_unknown_missing_and_disallowed_units_fail_clearly():
    space = _space(SparsityScheme(0.5, step=64, max_levels=2))
    names = list(space.names)
    good = {name: 0 for name in names}
    with pytest.raises(ValueError, match=r"unknown \['model.layers.9.attn'\]"):
        space.check({**good, "model.layers.9.attn": 0})
    with pytest.raises(ValueError, match=rf"missing \['{names[2]}'\]"):
        space.check({k: v for k, v in good.items() if k != names[2]})
    renamed = {name.replace("model.", "transformer."): 0 for name in names}
    with pytest.raises(ValueError, match=r"unknown \[.*\.\.\. missing \[.*\.\.\."):
        space.to_array(renamed)
    with pytest.raises(ValueError, match=rf"level 3 of '{names[1]}' is not allowed; allowed: \[-2, -1, 0, 1, 2\]"):
        space.check({**good, names[1]: 3})
    # The same checks hold for a tagged profile of the right space.
    tagged = space.from_array([5, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"level 5 .* not allowed"):
        space.to_array(tagged)
    assert not space.is_feasible(tagged)


def test_a_bitwidth_level_outside_the_choices_is_refused():
    space = _space(BitwidthScheme(4.0, choices=(2, 4, 8)))
    profile = space.from_array([4, 4, 4, 4, 4, 5])
    with pytest.raises(ValueError, match=r"level 5 of 'model.layers.2.mlp' is not allowed; allowed: \[2, 4, 8\]"):
        space.check(profile)


def test_plain_mappings_are_checked_by_units_and_levels_only():
    space = _space(SparsityScheme(0.5, step=64, max_levels=2))
    levels = dict.fromkeys(space.names, 0)
    space.check(levels)
    assert space.is_feasible(levels)
    assert space.to_array(levels).tolist() == [0] * len(space)


# --- Fidelity -----------------------------------------------------------------------------------


@FAST
@given(
    st.integers(1, 2**40),
    st.lists(st.integers(0, 10**6), max_size=3).map(tuple),
    st.sampled_from(["calibration", "heldout"]),
)
def test_fidelity_round_trip(tokens, batch, split):
    fidelity = Fidelity(tokens, batch, split)
    again = Fidelity.from_dict(json.loads(json.dumps(fidelity.to_dict())))
    assert again == fidelity and hash(again) == hash(fidelity)


def test_fidelity_validation():
    with pytest.raises(ValueError, match="positive, got 0"):
        Fidelity(0)
    with pytest.raises(ValueError, match="'train'"):
        Fidelity(128, split="train")
    assert Fidelity(128, [2, 1]).batch == (2, 1)  # type: ignore[arg-type]
    assert Fidelity.from_dict({"tokens": 64}) == Fidelity(64)
