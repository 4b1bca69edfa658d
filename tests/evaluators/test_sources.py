"""Files a spec may name as data: token files in three formats, their checks, document counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from evaluators.sources import check_token_file, file_documents, is_token_file, outside, read_tokens

IDS = np.arange(24, dtype=np.int32).reshape(4, 6)


def _write(path, array, **more):
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".safetensors":
        save_file({"input_ids": array, **more} if more else {"tokens": array}, str(path))
    else:
        torch.save(torch.from_numpy(array), path)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".pt"])
def test_every_format_reads_back_as_int64_with_one_document_per_row(tmp_path, suffix):
    path = _write(tmp_path / f"ids{suffix}", IDS)
    assert is_token_file(str(path))
    assert check_token_file(path) == 4 == file_documents(str(path))
    tokens = read_tokens(path)
    assert tokens.dtype == np.int64
    assert np.array_equal(tokens, IDS)
    assert check_token_file(_write(tmp_path / f"flat{suffix}", IDS.reshape(-1))) == 1


def test_a_safetensors_file_with_several_tensors_names_input_ids(tmp_path):
    path = _write(tmp_path / "two.safetensors", IDS, mask=np.ones_like(IDS))
    assert np.array_equal(read_tokens(path), IDS)
    save_file({"a": IDS, "b": IDS}, str(tmp_path / "ambiguous.safetensors"))
    with pytest.raises(ValueError, match=r"holds 2 tensors \['a', 'b'\]; expected one, or one named 'input_ids'"):
        check_token_file(tmp_path / "ambiguous.safetensors")


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".pt"])
@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3), dtype=np.float32), "integer"),
        (np.zeros((2, 3, 4), dtype=np.int64), r"shape \[2, 3, 4\]; expected token ids as \[tokens\] or"),
        (np.zeros((0, 3), dtype=np.int64), r"shape \[0, 3\]"),
        (np.array([[1, -2]], dtype=np.int64), r"a negative token id \(-2\)"),
    ],
    ids=["float", "3-d", "empty", "negative"],
)
def test_a_malformed_token_file_is_one_line(tmp_path, suffix, array, message):
    with pytest.raises(ValueError, match=message) as info:
        check_token_file(_write(tmp_path / f"bad{suffix}", array))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".pt"])
def test_a_file_that_is_not_a_token_file_is_one_line(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x93NUMPY this is not what it seems" * 3)
    with pytest.raises(ValueError, match="cannot read token file") as info:
        check_token_file(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"token file '.*absent\.npy' does not exist"):
        check_token_file(tmp_path / "absent.npy")


def test_text_files_count_their_documents_and_other_sources_are_not_files(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("one\n\ntwo\nstill two\n\n\nthree\n")
    assert file_documents(str(path)) == 3
    assert file_documents("default") is None
    assert file_documents("austen") is None
    assert (
        outside((2, 9), 3, "docs.txt")
        == "[2, 9) is outside the 3 documents of 'docs.txt' (document indices run from 0 to 2)"
    )


def test_a_pt_file_must_hold_one_tensor(tmp_path):
    torch.save({"ids": torch.arange(4)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match=r"^cannot read token file .*dict\.pt: it holds a dict, not one tensor"):
        check_token_file(tmp_path / "dict.pt")
