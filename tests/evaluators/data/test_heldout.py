"""User data: token files as a source, and held-out documents pinned so no seed moves them."""

from __future__ import annotations

import re

import numpy as np
import pydantic
import pytest

from evaluators import DataSpec, TokenData
from evaluators.models import byte_tokenizer

SMALL = {"seq_len": 64, "calibration_tokens": 2048, "heldout_tokens": 512, "stats_tokens": 512}


def _data(seed: int = 0, **spec: object) -> TokenData:
    return TokenData(DataSpec.model_validate({**SMALL, **spec}), byte_tokenizer(), "causal-lm", seed)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """200 documents, each its own marker repeated: ``d0007 d0007 ...``."""
    path = tmp_path_factory.mktemp("pinned") / "docs.txt"
    path.write_text("\n\n".join(" ".join([f"d{i:04d}"] * 12) for i in range(200)) + "\n")
    return path


def _markers(blocks: np.ndarray) -> list[int]:
    text = byte_tokenizer().decode(blocks.reshape(-1).tolist())
    return [int(m) for m in dict.fromkeys(re.findall(r"d(\d{4})", text))]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pinned_heldout_documents_are_those_in_order_and_never_calibration(numbered, seed):
    data = _data(seed, source=str(numbered), heldout_documents=[40, 50])
    held, calibration = _markers(data.heldout), _markers(data.calibration)
    assert held == list(range(40, 40 + len(held)))  # in order, from the first pinned document
    assert len(held) >= 5
    assert not set(range(40, 50)) & set(calibration)


def test_pinned_documents_too_few_for_heldout_tokens_are_an_error_not_a_borrow(numbered):
    with pytest.raises(ValueError, match=r"gives [\d,]+ tokens, but held-out \+ calibration need"):
        _data(source=str(numbered), heldout_documents=[40, 42])


def test_a_pinned_range_outside_the_data_fails_validation_with_the_document_count(numbered):
    with pytest.raises(pydantic.ValidationError, match=r"\[150, 250\) is outside the 200 documents of '.*docs\.txt'"):
        DataSpec(source=str(numbered), heldout_documents=(150, 250))
    with pytest.raises(pydantic.ValidationError, match=r"needs 0 <= start < stop"):
        DataSpec(heldout_documents=(5, 5))
    with pytest.raises(pydantic.ValidationError, match=r"data.heldout_source is set too"):
        DataSpec(heldout_source="austen", heldout_documents=(0, 5))
    # a built-in corpus is counted when it is read
    with pytest.raises(ValueError, match=r"^data\.heldout_documents: \[0, 100000\) is outside the [\d,]+ documents"):
        _data(heldout_documents=[0, 100_000])


def test_a_token_file_is_used_as_is_one_document_per_row(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, size=(60, 100))
    path = tmp_path / "ids.npy"
    np.save(path, rows)
    data = _data(source=str(path), heldout_documents=[0, 6])
    eos = byte_tokenizer().eos_token_id
    stream = np.concatenate([np.append(row, eos) for row in rows[:6]])
    assert np.array_equal(data.heldout.reshape(-1), stream[: data.heldout.size])


def test_token_ids_beyond_the_vocabulary_are_one_line(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.full((40, 100), 50_000))
    with pytest.raises(ValueError, match=r"^data\.source: a token file holds ids from 50000 to 50000, outside the"):
        _data(source=str(path))
