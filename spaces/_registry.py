"""Every level scheme by name, and a scheme rebuilt from its JSON form."""

from __future__ import annotations

from typing import Any

from ._mixed import MixedScheme
from ._schemes import BitwidthScheme, DropScheme, LevelScheme, SparsityScheme

SCHEMES: dict[str, type[LevelScheme]] = {
    SparsityScheme.name: SparsityScheme,
    BitwidthScheme.name: BitwidthScheme,
    DropScheme.name: DropScheme,
    MixedScheme.name: MixedScheme,
}


def scheme_from_dict(data: dict[str, Any]) -> LevelScheme:
    """Rebuild a scheme from `LevelScheme.to_dict`.

    Raises:
        ValueError: an unknown scheme name or a bad parameter.
    """
    params = dict(data)
    name = params.pop("name", None)
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; allowed: {sorted(SCHEMES)}")
    for key in ("choices", "sparsities"):  # tuples in the dataclasses, lists in JSON
        if key in params:
            params[key] = tuple(params[key])
    try:
        return SCHEMES[name](**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for scheme {name!r}: {exc}") from None
