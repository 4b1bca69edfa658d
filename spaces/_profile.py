"""`Profile`: one level per unit, immutable, with a versioned JSON form."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

FORMAT = "pressroom.profile"
VERSION = 1


class Profile(Mapping[str, int]):
    """An immutable mapping unit name -> level, tagged with the space it belongs to.

    Args:
        levels: unit name -> integer level.
        scheme: the resolved scheme's `to_dict()` (name, target and parameters).
        model: the fingerprint of the model the profile was made for.
        granularity: ``"layer"``, ``"fused"`` or ``"block"`` (`make_units`).

    Example:
        >>> p = Profile({"fc1": 1, "fc2": -1}, scheme={"name": "sparsity", "target": 0.5}, model="m")
        >>> Profile.from_json(p.to_json()) == p
        True
    """

    __slots__ = ("_hash", "_levels", "granularity", "model", "scheme")

    def __init__(
        self,
        levels: Mapping[str, int],
        *,
        scheme: Mapping[str, Any],
        model: str,
        granularity: str = "layer",
    ) -> None:
        for name, level in levels.items():
            if isinstance(level, bool) or not isinstance(level, int | np.integer):
                raise TypeError(f"profile level of {name!r} must be an integer, got {level!r}")
        self._freeze({str(k): int(v) for k, v in levels.items()}, scheme, model, granularity)

    @classmethod
    def _of_ints(cls, levels: dict[str, int], scheme: Mapping[str, Any], model: str, granularity: str) -> Profile:
        """A profile over `levels`, a new dict of str -> int that no one else holds, taken as it
        is: the fast path of `Space.from_array`, which builds thousands of them at a barrier."""
        profile = cls.__new__(cls)
        profile._freeze(levels, scheme, model, granularity)
        return profile

    def _freeze(self, levels: dict[str, int], scheme: Mapping[str, Any], model: str, granularity: str) -> None:
        # Attributes are set once, here; __setattr__ refuses any later change.
        set_ = object.__setattr__
        set_(self, "_levels", MappingProxyType(levels))
        set_(self, "scheme", MappingProxyType(dict(scheme)))
        set_(self, "model", model)
        set_(self, "granularity", granularity)
        set_(self, "_hash", None)  # computed when first asked for

    _levels: Mapping[str, int]
    scheme: Mapping[str, Any]
    model: str
    granularity: str
    _hash: int | None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Profile is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Profile is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Mapping proxies do not pickle; rebuild from the plain form (pickle, copy, Ray).
        return (Profile.from_dict, (self.to_dict(),))

    def __getitem__(self, name: str) -> int:
        return self._levels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(tuple(sorted(self._levels.items()))))
        assert self._hash is not None
        return self._hash

    def values_for(self, names: Iterable[str]) -> tuple[int, ...]:
        """The levels of `names`, in that order.

        Raises:
            KeyError: a name that is not one of the profile's units.
        """
        return tuple(map(self._levels.__getitem__, names))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Profile):
            return (
                dict(self._levels) == dict(other._levels)
                and dict(self.scheme) == dict(other.scheme)
                and self.model == other.model
                and self.granularity == other.granularity
            )
        return NotImplemented

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}: {v}" for k, v in list(self._levels.items())[:4])
        more = f", ... ({len(self)} units)" if len(self) > 4 else ""
        return f"Profile({self.scheme.get('name')}@{self.scheme.get('target')}, {{{shown}{more}}})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "scheme": dict(self.scheme),
            "granularity": self.granularity,
            "levels": dict(self._levels),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Read the form `to_dict` writes.

        Raises:
            ValueError: not a pressroom profile, an unsupported version, a missing field, or
                levels or a scheme that are not objects of the right types.
        """
        if data.get("format") != FORMAT:
            raise ValueError(f"not a pressroom profile: format is {data.get('format')!r}, expected {FORMAT!r}")
        version = data.get("version")
        if version != VERSION:
            raise ValueError(f"profile version {version!r} is not supported; this pressroom reads version {VERSION}")
        missing = [key for key in ("model", "scheme", "levels") if key not in data]
        if missing:
            raise ValueError(f"profile is missing {missing}")
        for key in ("levels", "scheme"):
            if not isinstance(data[key], Mapping):
                raise ValueError(f"profile {key} must be an object, got {data[key]!r}")
        try:
            return cls(
                data["levels"],
                scheme=data["scheme"],
                model=str(data["model"]),
                granularity=str(data.get("granularity", "layer")),
            )
        except TypeError as exc:  # a level that is not an integer
            raise ValueError(str(exc)) from None

    @classmethod
    def from_json(cls, text: str) -> Profile:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"profile is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("profile JSON must be an object")
        return cls.from_dict(data)
