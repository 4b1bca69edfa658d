"""Calibration data: sources, exact token counts, shared minibatches, a disjoint held-out split."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators import DataSpec, TokenData
from evaluators.data import corpus as corpus_module
from evaluators.data.corpus import documents, stdlib_docstrings
from evaluators.models import byte_tokenizer
from evaluators.sources import text_file_documents
from spaces import Fidelity

SEQ = 64
SMALL = {"seq_len": SEQ, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024}


def _data(task: str = "causal-lm", seed: int = 0, cache_dir: Path | None = None, **spec: object) -> TokenData:
    return TokenData(DataSpec.model_validate({**SMALL, **spec}), byte_tokenizer(), task, seed, cache_dir)


@pytest.fixture(scope="module", params=["causal-lm", "encoder"])
def data(request, cache_dir) -> TokenData:
    """The default corpus, tokenised for one task (the corpus parse is cached for the session)."""
    return _data(request.param, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> Path:
    """A text file of 300 documents, each its own marker repeated: ``d0007 d0007 ...``."""
    path = tmp_path_factory.mktemp("numbered") / "docs.txt"
    path.write_text("\n\n".join(" ".join([f"d{i:04d}"] * 12) for i in range(300)) + "\n")
    return path


@pytest.mark.parametrize("tokens", [1, 2, SEQ - 1, SEQ, SEQ + 1, 1000, 4096])
def test_a_batch_has_exactly_the_tokens_asked_for(data, tokens):
    batch = data.batch(Fidelity(tokens, (3, 1)))
    rows = -(-tokens // SEQ)
    assert batch.tokens == tokens
    assert batch.input_ids.shape == batch.attention_mask.shape == (rows, SEQ)
    assert batch.input_ids.dtype == torch.long
    kept = tokens - (rows - 1) * SEQ  # real tokens in the last block, the only one that may be cut
    assert batch.attention_mask[:-1].all()
    assert batch.attention_mask[-1].tolist() == [1] * kept + [0] * (SEQ - kept)
    assert (batch.input_ids[-1, kept:] == data.pad_id).all()


@pytest.mark.parametrize("tokens", [100, 1024, 5000])
def test_first_gives_a_fixed_prefix_of_the_pool(data, tokens):
    batch = data.first(tokens)
    whole = batch.input_ids.shape[0] - 1  # blocks before the last, which may be cut
    assert batch.tokens == min(tokens, 4096)
    assert torch.equal(batch.input_ids[:whole], torch.from_numpy(data.calibration[:whole]))


def test_encoder_blocks_start_with_cls_and_end_with_sep_even_when_cut(cache_dir):
    data = _data("encoder", cache_dir=cache_dir)
    tok = byte_tokenizer()
    for tokens in (SEQ * 3, SEQ * 3 + 10, SEQ * 3 + 2):
        batch = data.batch(Fidelity(tokens, (0,)))
        assert (batch.input_ids[:, 0] == tok.cls_token_id).all()
        ends = batch.attention_mask.sum(1) - 1  # the last real position of each block
        assert (batch.input_ids[torch.arange(len(ends)), ends] == tok.sep_token_id).all()
    one = data.batch(Fidelity(SEQ + 1, (0,)))  # a last block of one token: just [CLS]
    assert one.input_ids[-1, :2].tolist() == [tok.cls_token_id, data.pad_id]


def test_the_same_seed_split_and_batch_give_the_same_tokens_in_another_instance(cache_dir):
    a, b = _data(cache_dir=cache_dir), _data(cache_dir=cache_dir)
    for fidelity in (Fidelity(700, (2, 1)), Fidelity(700, (2, 1), "heldout")):
        first, second = a.batch(fidelity), b.batch(fidelity)
        assert torch.equal(first.input_ids, second.input_ids)
        assert torch.equal(first.attention_mask, second.attention_mask)
    assert a.fingerprint == b.fingerprint


def test_another_process_draws_the_same_tokens(cache_dir):
    """A worker is another process (with its own string-hash seed): it must draw the same batch."""
    code = f"""
import hashlib
from pathlib import Path
from evaluators import DataSpec, TokenData
from evaluators.models import byte_tokenizer
from spaces import Fidelity
data = TokenData(DataSpec.model_validate({SMALL!r}), byte_tokenizer(), "causal-lm", 0, Path({str(cache_dir)!r}))
print(hashlib.sha256(data.batch(Fidelity(700, (2, 1))).input_ids.numpy().tobytes()).hexdigest())
"""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = _data(cache_dir=cache_dir).batch(Fidelity(700, (2, 1)))
    assert result.stdout.strip() == hashlib.sha256(here.input_ids.numpy().tobytes()).hexdigest()


def test_different_batches_splits_and_seeds_draw_different_tokens(cache_dir):
    data = _data(cache_dir=cache_dir)
    base = data.batch(Fidelity(640, (1, 0))).input_ids
    for other in (
        data.batch(Fidelity(640, (1, 1))).input_ids,
        data.batch(Fidelity(640, (2, 0))).input_ids,
        data.batch(Fidelity(640, (1, 0), "heldout")).input_ids,
        _data(seed=1, cache_dir=cache_dir).batch(Fidelity(640, (1, 0))).input_ids,
    ):
        assert not torch.equal(base, other)


def _documents_in(blocks: np.ndarray) -> set[int]:
    tok = byte_tokenizer()
    found: set[int] = set()
    for row in blocks:
        found.update(int(m) for m in re.findall(r"d(\d{4})", tok.decode(row.tolist())))
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_heldout_split_shares_no_document_with_calibration(numbered, seed):
    data = _data(seed=seed, source=str(numbered))
    heldout, calibration = _documents_in(data.heldout), _documents_in(data.calibration)
    assert len(heldout) >= 10 and len(calibration) >= 50  # the check below is not vacuous
    assert heldout.isdisjoint(calibration)
    # Every block is whole documents' text cut at block edges: nothing from outside the file.
    assert heldout | calibration <= set(range(300))


def test_the_document_order_depends_on_the_seed(numbered):
    assert _documents_in(_data(seed=0, source=str(numbered)).heldout) != _documents_in(
        _data(seed=1, source=str(numbered)).heldout
    )


def test_the_default_corpus_is_english_prose_and_is_cached(cache_dir, monkeypatch):
    docs = stdlib_docstrings(cache_dir)
    assert len(docs) > 1000
    assert all(len(doc.split()) >= 20 for doc in docs)
    words = Counter(word.lower() for doc in docs for word in doc.split())
    top = [word for word, _ in words.most_common(10)]
    assert {"the", "a", "is", "to", "of"} <= set(top), top
    assert sum(" the " in doc for doc in docs) > 0.7 * len(docs)

    cached = list(cache_dir.glob("stdlib-docstrings-*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text()) == docs

    def no_parse(root):
        raise AssertionError("the standard library was parsed again despite the cache")

    monkeypatch.setattr(corpus_module, "_parse_stdlib", no_parse)
    assert stdlib_docstrings(cache_dir) == docs
    assert list(documents("default", "text", cache_dir))[:3] == docs[:3]


def test_an_unreadable_corpus_cache_is_ignored_and_rewritten(tmp_path, cache_dir, caplog):
    docs = stdlib_docstrings(cache_dir)
    name = next(cache_dir.glob("stdlib-docstrings-*.json")).name
    (tmp_path / name).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="evaluators.data.corpus"):
        assert stdlib_docstrings(tmp_path) == docs
    assert "unreadable corpus cache" in caplog.text
    assert json.loads((tmp_path / name).read_text()) == docs


def test_a_text_file_is_split_into_documents_at_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first paragraph,\nstill the first.\n\n\n  second  \n \nthird\n")
    assert text_file_documents(path) == ["first paragraph,\nstill the first.", "second", "third"]
    (tmp_path / "empty.txt").write_text("\n \n\n")
    with pytest.raises(ValueError, match=r"^data\.source: text file .*empty\.txt' holds no text$"):
        text_file_documents(tmp_path / "empty.txt")


def test_a_missing_source_names_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match=r"^data\.source: '.*absent\.txt' is neither 'default', 'dataset:NAME"):
        _data(source=str(tmp_path / "absent.txt"))


def test_a_dataset_source_without_the_datasets_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r"^data\.source: a dataset source needs the package 'datasets'"):
        _data(source="dataset:wikitext:wikitext-2-raw-v1:train")


def test_an_unreachable_dataset_is_one_clear_error(monkeypatch):
    class Offline:
        """Stands in for `datasets` on a machine that cannot reach the hub."""

        @staticmethod
        def load_dataset(*args, **kwargs):
            raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", Offline)
    with pytest.raises(ValueError, match=r"^data\.source: cannot load dataset 'wikitext:wikitext-2-raw-v1': .*reach"):
        _data(source="dataset:wikitext:wikitext-2-raw-v1")


def test_a_source_too_small_names_the_key_to_lower(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("only a few words here\n\nand a few more\n")
    with pytest.raises(ValueError, match=r"gives [\d,]+ tokens, but held-out \+ calibration need [\d,]+; lower data\."):
        _data(source=str(path))


@pytest.mark.parametrize(("split", "key"), [("calibration", "calibration_tokens"), ("heldout", "heldout_tokens")])
def test_asking_for_more_than_the_pool_names_the_key_to_raise(cache_dir, split, key):
    data = _data(cache_dir=cache_dir)
    pool = len(data.calibration if split == "calibration" else data.heldout) * SEQ
    assert data.batch(Fidelity(pool, (0,), split)).tokens == pool
    with pytest.raises(
        ValueError, match=rf"asks for {pool + 1:,} {split} tokens, .* holds {pool:,}; raise data\.{key}$"
    ):
        data.batch(Fidelity(pool + 1, (0,), split))


def test_a_split_saved_as_one_document_cuts_the_same_blocks(tmp_path, cache_dir):
    # What benchmarks/quality_smollm2.py --write-data / --data-dir rely on to move data between machines.
    data = _data(cache_dir=cache_dir)
    paths = [tmp_path / "calibration.npy", tmp_path / "heldout.npy"]
    for path, blocks in zip(paths, (data.calibration, data.heldout), strict=True):
        np.save(path, blocks.reshape(-1))
    again = _data(seed=5, cache_dir=cache_dir, source=str(paths[0]), heldout_source=str(paths[1]))
    assert np.array_equal(again.calibration, data.calibration) and np.array_equal(again.heldout, data.heldout)
    assert again.fingerprint == data.fingerprint
