"""A profile in the forms other tools read, and readers that turn them back into a profile.

Formats (`FORMATS`):

- ``json``: pressroom's own versioned profile JSON (`Profile.to_json`).
- ``map``: a plain JSON object, module name -> per-layer sparsity (a fraction), bits, or
  1 = dropped; what a script that prunes or quantises layer by layer needs.
- ``llm-compressor``: an llm-compressor recipe (YAML). Sparsity becomes one pruning modifier
  with one sparsity per target layer (a list in the order of `targets`, which llm-compressor
  accepts); bits become a quantisation modifier with one config group per bitwidth (and per
  strategy: ``group``, or ``channel`` for layers no wider than the group size).
  llm-compressor has no block dropping, so drop profiles cannot be written this way.
- ``evopress``: the configuration text of the EvoPress reference code: one line per unit,
  ``layer[,layer...]: level`` (sparsity levels and bits mean the same there), and for drop
  one line per transformer block: ``none``, ``attn``, ``mlp`` or ``attn+mlp``.

Every format is read back against the `Space` of the model, and must give the same profile.

Example:
    >>> text = write_profile(profile, space, "map")  # doctest: +SKIP
    >>> read_profile(text, space, "map") == profile  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spaces import BitwidthScheme, MixedScheme, Profile, Space, Unit

#: Per-layer values that match a level to within this are that level (writers print every digit).
TOLERANCE = 1e-9
#: The llm-compressor modifier for each pressroom compressor (llm-compressor has no one-shot
#: magnitude pruning; Wanda, which also needs no weight update, is the closest).
LLMC_MODIFIERS = {
    "sparsegpt": "SparseGPTModifier",
    "wanda": "WandaPruningModifier",
    "magnitude": "WandaPruningModifier",
    "gptq": "GPTQModifier",
    "rtn": "QuantizationModifier",
}
_STAGE, _PRUNING, _QUANT = "pressroom_stage", "pruning_modifiers", "quantization_modifiers"
_DROP_LINES = {frozenset(): "none", frozenset({"attn"}): "attn", frozenset({"mlp"}): "mlp"}
_DROP_LINES[frozenset({"attn", "mlp"})] = "attn+mlp"


# --- per-layer values ------------------------------------------------------------------------


def layer_values(space: Space, profile: Mapping[str, int]) -> dict[str, float | int | str]:
    """Per layer (module name): sparsity as a fraction (or ``"n:m"`` for an N:M layer of a mixed
    profile), bits, or 1 = dropped / 0 = kept.

    Raises:
        ValueError: the profile does not belong to `space` (see `Space.check`).
    """
    out: dict[str, float | int | str] = {}
    for unit, level in zip(space.units, space.to_array(profile), strict=True):
        out.update(unit_values(space, unit, int(level)))
    return out


def unit_values(space: Space, unit: Unit, level: int) -> dict[str, float | int | str]:
    """Per-layer values (see `layer_values`) of one unit at one level."""
    scheme = space.scheme
    settings = scheme.layer_settings(unit, level)
    if scheme.name not in ("sparsity", "mixed"):
        return dict(settings)
    sizes = {layer.name: layer.numel for layer in unit.layers}
    if isinstance(scheme, MixedScheme) and any(scheme.decode(count)[1] for count in settings.values()):
        return dict.fromkeys(settings, f"{scheme.n}:{scheme.m}")  # an N:M layer is its pattern
    return {name: abs(count) / sizes[name] for name, count in settings.items()}


def _distance(value: float | str, level_value: float | int | str) -> float:
    if isinstance(value, str) or isinstance(level_value, str):
        return 0.0 if value == level_value else float("inf")
    return abs(float(value) - level_value)


def profile_from_layer_values(space: Space, values: Mapping[str, float | str]) -> Profile:
    """The profile whose per-layer values (see `layer_values`) are `values`.

    Raises:
        ValueError: unknown or missing layers, or a value that is no level of its unit (the
            message names the layer and the values its levels allow).
    """
    names = [layer.name for layer in space.layers]
    unknown = sorted(set(values) - set(names))
    missing = [name for name in names if name not in values]
    if unknown or missing:
        raise ValueError(
            f"the layers do not match this model's: unknown {unknown[:5]}, missing {missing[:5]}"
            f" ({len(unknown)} unknown, {len(missing)} missing)"
        )
    levels = []
    for unit, allowed in zip(space.units, space.levels, strict=True):
        options = {level: unit_values(space, unit, level) for level in allowed}
        error = {
            level: max(_distance(values[name], value) for name, value in per_layer.items())
            for level, per_layer in options.items()
        }
        best = min(allowed, key=error.__getitem__)
        if error[best] > TOLERANCE:
            nearest = options[best]
            layer = max(nearest, key=lambda name: _distance(values[name], nearest[name]))
            shown = [options[level][layer] for level in allowed]
            raise ValueError(f"{values[layer]!r} for layer {layer!r} is not one of its levels; allowed: {shown}")
        levels.append(best)
    return space.from_array(levels)


# --- the formats ---------------------------------------------------------------------------


def _write_json(profile: Profile, space: Space, compressor: str | None, symmetric: bool) -> str:
    space.check(profile)
    return profile.to_json() + "\n"


def _read_json(text: str, space: Space) -> Profile:
    profile = Profile.from_json(text)
    space.check(profile)
    return profile


def _write_map(profile: Profile, space: Space, compressor: str | None, symmetric: bool) -> str:
    return json.dumps(layer_values(space, profile), indent=2) + "\n"


def _read_map(text: str, space: Space) -> Profile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the layer map is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, int | float | str) for v in data.values()):
        raise ValueError('a layer map is a JSON object of module name -> number (or "n:m" for an N:M layer)')
    return profile_from_layer_values(space, data)


def _modifier(compressor: str | None, scheme: str) -> str:
    defaults = {"sparsity": "wanda", "bitwidth": "gptq"}
    name = compressor or defaults[scheme]
    if name not in LLMC_MODIFIERS:
        raise ValueError(f"compressor {name!r} has no llm-compressor modifier; known: {sorted(LLMC_MODIFIERS)}")
    return LLMC_MODIFIERS[name]


def _write_llmc(profile: Profile, space: Space, compressor: str | None, symmetric: bool) -> str:
    scheme = space.scheme.name
    if scheme == "drop":
        raise ValueError("llm-compressor has no recipe for dropping blocks; export drop profiles as map or evopress")
    if scheme == "mixed":
        raise ValueError(
            "an llm-compressor pruning modifier takes one mask structure for all its targets; export mixed "
            "(N:M and unstructured) profiles as json or map"
        )
    values = layer_values(space, profile)
    modifier = _modifier(compressor, scheme)
    if scheme == "sparsity":
        names = [layer.name for layer in space.layers]  # model order: llm-compressor's order of targets
        args: dict[str, Any] = {"sparsity": [values[n] for n in names], "targets": names, "mask_structure": "0:0"}
        recipe = {_STAGE: {_PRUNING: {modifier: args}}}
    else:
        groups = _quant_groups(space, values, symmetric)
        recipe = {_STAGE: {_QUANT: {modifier: {"config_groups": groups}}}}
    header = (
        f"# llm-compressor recipe written by pressroom for model {profile.model}\n"
        f"# scheme {scheme}, target {space.scheme.target}, {len(space.layers)} layers\n"
    )
    return header + yaml.safe_dump(recipe, sort_keys=False, width=1000)


def _quant_groups(space: Space, values: Mapping[str, float | int | str], symmetric: bool) -> dict[str, Any]:
    """llm-compressor config groups, one per bitwidth and strategy, by `group_problem`'s rule:
    groups of `group_size` columns where it divides a layer's width, one group per row (the
    ``channel`` strategy) where it is at least the width, which is what pressroom's RTN and
    GPTQ computed. Layers at 16 bits are the dense model and in no group.

    Raises:
        ValueError: a layer the group size fits neither way (a space from before the rule).
    """
    scheme = space.scheme
    assert isinstance(scheme, BitwidthScheme)
    problem = scheme.group_problem(space.layers)
    if problem:
        raise ValueError(f"llm-compressor would refuse this recipe: {problem}")
    widths = {layer.name: layer.shape[-1] for layer in space.layers}
    groups: dict[str, Any] = {}
    for name, value in values.items():
        bits = int(value)
        if bits >= 16:
            continue
        grouped = scheme.group_size < widths[name]
        key = f"group_{bits}bit" if grouped else f"channel_{bits}bit"
        if key not in groups:
            # RTN's and GPTQ's grid (evaluators/compressors/rtn.py): a zero point per group unless symmetric
            weights: dict[str, Any] = {"num_bits": bits, "type": "int", "symmetric": symmetric}
            strategy = {"strategy": "group", "group_size": scheme.group_size} if grouped else {"strategy": "channel"}
            weights.update(strategy)
            groups[key] = {"targets": [], "weights": weights}
        groups[key]["targets"].append(name)
    return dict(sorted(groups.items(), key=lambda item: (item[1]["weights"]["num_bits"], item[0])))


def _read_llmc(text: str, space: Space) -> Profile:
    try:
        recipe = yaml.safe_load(text)
        modifiers = recipe[_STAGE].get(_PRUNING) or recipe[_STAGE][_QUANT]
        ((_, args),) = modifiers.items()
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        raise ValueError(
            f"not an llm-compressor recipe as pressroom writes it (one modifier under {_STAGE}.{_PRUNING} "
            f"or {_STAGE}.{_QUANT})"
        ) from None
    values: dict[str, float] = {}
    if "sparsity" in args:
        targets, sparsity = args.get("targets", []), args["sparsity"]
        if not isinstance(sparsity, list) or len(sparsity) != len(targets):
            raise ValueError("the recipe's sparsity must be a list with one value per target")
        values = dict(zip(targets, sparsity, strict=True))
    else:
        for group in args.get("config_groups", {}).values():
            values.update(dict.fromkeys(group["targets"], group["weights"]["num_bits"]))
        for layer in space.layers:  # layers in no group stay dense
            values.setdefault(layer.name, 16)
    return profile_from_layer_values(space, values)


def _write_evopress(profile: Profile, space: Space, compressor: str | None, symmetric: bool) -> str:
    levels = space.to_array(profile)
    if space.scheme.name != "drop":
        lines = [
            f"{','.join(layer.name for layer in unit.layers)}: {int(level)}"
            for unit, level in zip(space.units, levels, strict=True)
        ]
        return "\n".join(lines) + "\n"
    dropped: dict[int, set[str]] = {}
    for unit, level in zip(space.units, levels, strict=True):
        if level:
            dropped.setdefault(unit.block, set()).update(layer.kind for layer in unit.layers)
    blocks = max(layer.block for layer in space.layers) + 1
    return "\n".join(_DROP_LINES[frozenset(dropped.get(b, set()))] for b in range(blocks)) + "\n"


def _read_evopress(text: str, space: Space) -> Profile:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if space.scheme.name == "drop":
        meaning = {line: kinds for kinds, line in _DROP_LINES.items()}
        blocks = max(layer.block for layer in space.layers) + 1
        if len(lines) != blocks or any(line not in meaning for line in lines):
            raise ValueError(
                f"an EvoPress drop configuration has one line per block ({blocks} here), each one of {sorted(meaning)}"
            )
        return space.from_array(
            [int({layer.kind for layer in unit.layers} <= meaning[lines[unit.block]]) for unit in space.units]
        )
    by_layers = {tuple(layer.name for layer in unit.layers): unit.name for unit in space.units}
    levels: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        names, sep, level = line.rpartition(":")
        key = tuple(name.strip() for name in names.split(","))
        if not sep or key not in by_layers or not level.strip().lstrip("-").isdigit():
            raise ValueError(f"line {number} of the EvoPress configuration is not 'layer[,layer...]: level': {line!r}")
        levels[by_layers[key]] = int(level)
    profile = Profile(levels, scheme=dict(space.scheme.to_dict()), model=space.model, granularity=space.granularity)
    return space.from_array(space.to_array(profile))


@dataclass(frozen=True)
class Format:
    """An export format: how to write a profile, and how to read it back against a space."""

    name: str
    suffix: str
    write: Callable[[Profile, Space, str | None, bool], str]
    read: Callable[[str, Space], Profile]
    describe: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("json", ".json", _write_json, _read_json, "pressroom profile JSON"),
        Format("map", ".json", _write_map, _read_map, "module name -> sparsity, bits or dropped"),
        Format("llm-compressor", ".yaml", _write_llmc, _read_llmc, "llm-compressor recipe"),
        Format("evopress", ".txt", _write_evopress, _read_evopress, "EvoPress configuration text"),
    )
}


def _format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; allowed: {sorted(FORMATS)}")
    return FORMATS[name]


def write_profile(
    profile: Profile, space: Space, fmt: str, *, compressor: str | None = None, symmetric: bool = False
) -> str:
    """The profile as text in format `fmt`.

    Args:
        profile: a profile of `space`.
        space: the space (its layers give per-layer values).
        fmt: one of `FORMATS`.
        compressor: the search's compressor (picks the llm-compressor modifier).
        symmetric: the search's `levels.symmetric` (the llm-compressor quantisation grid).

    Raises:
        ValueError: an unknown format, a profile of another space, or a format that cannot hold
            this scheme.
    """
    return _format(fmt).write(profile, space, compressor, symmetric)


def read_profile(text: str, space: Space, fmt: str) -> Profile:
    """Read what `write_profile` wrote back into a profile of `space`.

    Raises:
        ValueError: an unknown format, or text that is not that format for this space's model.
    """
    return _format(fmt).read(text, space)


#: What the per-layer values of `profile_document` are, by scheme.
VALUE_MEANINGS = {
    "sparsity": "sparsity: the fraction of the layer's weights pruned",
    "mixed": "sparsity: the fraction of the layer's weights pruned, or n:m for an N:M pattern",
    "bitwidth": "bits per weight",
    "drop": "whether the layer is kept or dropped",
}


def profile_document(profile: Profile, space: Space) -> dict[str, Any]:
    """The profile's JSON form (`Profile.to_dict`) with what its levels mean per layer.

    Level indices alone say little to a reader; ``values`` adds, per layer (module name), the
    sparsity fraction, the bits, or ``"kept"``/``"dropped"``. `Profile.from_dict` ignores the
    extra key, so `apply` and the readers take the document as they take a bare profile.

    Raises:
        ValueError: the profile does not belong to `space`.
    """
    values = layer_values(space, profile)
    if space.scheme.name == "drop":
        values = {name: "dropped" if value else "kept" for name, value in values.items()}
    return {**profile.to_dict(), "values": {"meaning": VALUE_MEANINGS[space.scheme.name], "layers": values}}


def read_profile_file(path: Path, space: Space) -> Profile:
    """A profile file as `pressroom best` writes it, read against `space`: ``.json``
    (``--format json``, the same as ``export --format json``) or ``.yaml``/``.yml`` (``--format yaml``).

    Raises:
        OSError: the file cannot be read.
        ValueError: not a pressroom profile, or one of another model, scheme or units.
    """
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return read_profile(text, space, "json")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"the profile is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("a profile YAML file must hold a mapping (as `pressroom best --format yaml` writes)")
    profile = Profile.from_dict(data)
    space.check(profile)
    return profile


def describe_levels(space: Space, profile: Profile) -> list[tuple[str, int, float]]:
    """(unit, level, meaning) per unit, for tables: sparsity, bits or dropped."""
    meanings = space.meanings(profile)
    return [(name, int(profile[name]), float(meanings[name])) for name in space.names]


__all__ = [
    "FORMATS",
    "LLMC_MODIFIERS",
    "TOLERANCE",
    "VALUE_MEANINGS",
    "Format",
    "describe_levels",
    "layer_values",
    "profile_document",
    "profile_from_layer_values",
    "read_profile",
    "read_profile_file",
    "unit_values",
    "write_profile",
]
