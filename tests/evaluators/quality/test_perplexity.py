import math

import pytest
import torch

from evaluators.models import build_tiny
from evaluators.quality.perplexity import Window, sliding_perplexity, windows


@pytest.fixture(scope="module")
def model():
    model, _ = build_tiny("tiny-llama")
    return model.eval()


def _by_hand(model, stream, seq_len, stride):
    """Each token after the first, scored once, by a forward of the window that first reaches it."""
    nll, count, scored = 0.0, 0, 1
    begin = 0
    while True:
        end = min(begin + seq_len, len(stream))
        with torch.no_grad():
            logits = model(input_ids=stream[begin:end].unsqueeze(0)).logits[0].double()
        for position in range(max(scored, begin + 1), end):
            logp = torch.log_softmax(logits[position - begin - 1], dim=-1)
            nll -= float(logp[stream[position]])
            count += 1
        scored = max(scored, end)
        if end == len(stream):
            return math.exp(nll / count), count
        begin += stride


def test_windows_overlap_and_end_with_a_short_one():
    assert windows(11, seq_len=4, stride=3) == [Window(0, 4, 1), Window(3, 7, 4), Window(6, 10, 7), Window(9, 11, 10)]
    assert windows(8, seq_len=4, stride=4) == [Window(0, 4, 1), Window(4, 8, 5)]  # disjoint blocks
    assert windows(3, seq_len=8, stride=4) == [Window(0, 3, 1)]
    scored = [t for w in windows(101, 16, 5) for t in range(w.first, w.end)]
    assert scored == list(range(1, 101))  # every token but the first, once, in order


@pytest.mark.parametrize("stride", [5, 16, 1])
def test_sliding_perplexity_matches_a_hand_computation(model, stride):
    stream = torch.randint(0, model.config.vocab_size, (77,), generator=torch.Generator().manual_seed(stride))
    expected, count = _by_hand(model, stream, 16, stride)
    result = sliding_perplexity(model, stream, seq_len=16, stride=stride, rows=3)
    assert result.targets == count == (72 if stride == 16 else 76)  # disjoint blocks skip each block's first
    assert result.value == pytest.approx(expected, rel=1e-9)


def test_more_context_changes_the_score(model):
    stream = torch.randint(0, model.config.vocab_size, (64,), generator=torch.Generator().manual_seed(0))
    disjoint = sliding_perplexity(model, stream, seq_len=16, stride=16)
    sliding = sliding_perplexity(model, stream, seq_len=16, stride=4)
    assert (disjoint.targets, sliding.targets) == (60, 63) and disjoint.value != sliding.value


@pytest.mark.parametrize(("length", "seq_len", "stride"), [(1, 8, 4), (10, 8, 0), (10, 8, 9), (10, 1, 1)])
def test_bad_windows_are_named(length, seq_len, stride):
    with pytest.raises(ValueError, match="perplexity"):
        windows(length, seq_len, stride)
