"""A profile applied to its model and saved so that `transformers` loads it back.

The saved weights are the compressed weights in the model's own dense layout: pruned weights
are zeros, quantised weights are their dequantised values, a dropped sub-block's output
projection is zero. Any `transformers` runtime loads the folder with
``AutoModel*.from_pretrained``. `evaluators.saving.checkpoint` writes bitwidth profiles packed for
low-bit kernels (compressed-tensors) and drop profiles as shallower models.

Example:
    >>> evaluator = compressed_evaluator(spec, profile)  # doctest: +SKIP
    >>> save_compressed(evaluator, profile, Path("out/tiny-llama-50"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from spaces import Profile

from ..config import EvaluatorSpec
from ..database import Progress
from ..evaluator import Evaluator
from ..models import load_model

logger = logging.getLogger(__name__)

#: The profile's file inside a saved model folder.
PROFILE_FILE = "pressroom-profile.json"


def check_scheme(spec: EvaluatorSpec, profile: Profile) -> None:
    """Fail fast, before any model is loaded, when the profile was made for another scheme.

    Raises:
        ValueError: the scheme name, target or granularity differ from the spec's.
    """
    c = spec.compression
    name, target = profile.scheme.get("name"), profile.scheme.get("target")
    if name != c.scheme or target != c.target:
        raise ValueError(
            f"the profile uses scheme {name!r} with target {target!r}, but the spec compresses with "
            f"{c.scheme!r} to target {c.target!r}"
        )


def compressed_evaluator(
    spec: EvaluatorSpec,
    profile: Profile,
    *,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> Evaluator:
    """An evaluator whose model holds `profile`'s compressed weights.

    The model is loaded first and its fingerprint compared with the profile's, so a profile
    for another model fails before the compression database is built.

    Args:
        spec: the model, compression and data the profile was searched with.
        profile: the profile to apply.
        device: where to load the model.
        progress: called while the compression database is built.

    Raises:
        ValueError: another scheme or model, or levels this model's space does not allow.
    """
    check_scheme(spec, profile)
    loaded = load_model(spec.model, spec.task, device, spec.cache_dir)
    if loaded.fingerprint != profile.model:
        raise ValueError(
            f"the profile was made for model {profile.model!r}, but {spec.model.name!r} has fingerprint "
            f"{loaded.fingerprint!r}; use the spec the profile was searched with"
        )
    evaluator = Evaluator(spec, device=device, progress=progress, loaded=loaded)
    evaluator.apply(profile)  # Space.check: granularity, scheme parameters, units, levels
    return evaluator


def save_compressed(evaluator: Evaluator, profile: Profile, out: Path) -> Path:
    """Save the evaluator's model holding `profile` (safetensors, config, tokenizer, profile).

    Args:
        evaluator: from `compressed_evaluator` (or any evaluator of the profile's model).
        profile: the profile; applied again if the model holds another.
        out: a folder that does not exist yet, or is empty.

    Returns:
        `out`.

    Raises:
        ValueError: `out` holds files already, or the profile does not fit the evaluator's model.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new one")
    evaluator.apply(profile)
    out.mkdir(parents=True, exist_ok=True)
    model: Any = evaluator.model  # a transformers PreTrainedModel
    model.save_pretrained(out)
    evaluator.loaded.tokenizer.save_pretrained(out)
    (out / PROFILE_FILE).write_text(profile.to_json() + "\n")
    logger.info("saved the model compressed by %r to %s", profile, out)
    return out


__all__ = ["PROFILE_FILE", "check_scheme", "compressed_evaluator", "save_compressed"]
