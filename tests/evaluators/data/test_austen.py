"""The evaluation text: Jane Austen's novels, read from Debian's package without R, and never
overlapping the calibration text (the standard library's docstrings)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from evaluators import DataSpec, TokenData
from evaluators.data.austen import NOVELS, austen_chapters
from evaluators.data.corpus import documents, stdlib_docstrings
from evaluators.models import byte_tokenizer

#: Word windows this long shared by two texts would mean shared text, not shared phrasing.
WINDOW = 13


def _windows(text: str) -> set[int]:
    words = re.findall(r"[a-z']+", text.lower())
    return {hash(tuple(words[i : i + WINDOW])) for i in range(len(words) - WINDOW + 1)}


@pytest.fixture(scope="module")
def chapters() -> list[str]:
    return austen_chapters()


def test_the_six_novels_are_read_as_their_chapters(chapters):
    # Sense and Sensibility 50, Pride and Prejudice 61, Mansfield Park 48, Emma 55,
    # Northanger Abbey 31, Persuasion 24
    assert len(NOVELS) == 6
    assert len(chapters) == 50 + 61 + 48 + 55 + 31 + 24
    assert chapters[0].startswith("The family of Dashwood had long been settled in Sussex.")
    assert any(c.startswith("It is a truth universally acknowledged") for c in chapters)
    assert sum(len(c.split()) for c in chapters) > 700_000
    assert not any(re.match(r"\s*chapter\b", c, re.IGNORECASE) for c in chapters)  # headings are cut
    assert all("\n\n" in c and "  " not in c for c in chapters)  # paragraphs kept, lines re-joined


def test_a_missing_package_is_one_line_naming_the_install(tmp_path):
    with pytest.raises(
        ValueError, match=r"^'austen' needs Debian's package r-cran-janeaustenr: apt-get install"
    ) as info:
        austen_chapters(tmp_path)
    assert "\n" not in str(info.value)


def test_calibration_and_evaluation_text_share_no_document_and_no_long_window(chapters, cache_dir):
    docstrings = stdlib_docstrings(cache_dir)
    assert not set(docstrings) & set(chapters)
    austen = set().union(*map(_windows, chapters))
    shared = [doc[:80] for doc in docstrings if _windows(doc) & austen]
    assert not shared, shared


def test_heldout_source_takes_evaluation_text_from_austen_and_calibration_from_docstrings(chapters, cache_dir):
    spec = DataSpec(
        seq_len=64, calibration_tokens=4096, heldout_tokens=2048, stats_tokens=1024, heldout_source="austen"
    )
    tok = byte_tokenizer()
    data = TokenData(spec, tok, "causal-lm", seed=0, cache_dir=cache_dir)
    heldout = tok.decode(data.heldout.reshape(-1).tolist())
    calibration = [tok.decode(row.tolist()) for row in data.calibration]
    assert heldout.startswith(chapters[0][:1000])  # Austen's order, whatever the seed
    assert np.array_equal(TokenData(spec, tok, "causal-lm", seed=1, cache_dir=cache_dir).heldout, data.heldout)
    assert not _windows(heldout) & set().union(*map(_windows, calibration))
    assert any(row in doc for row in calibration[:5] for doc in stdlib_docstrings(cache_dir))
    assert list(documents("austen", "text", None)) == chapters
