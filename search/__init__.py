"""Search per-layer compression profiles, and use what a search found.

The public Python API; the `pressroom` command line is `search.cli`.

Example:
    >>> from search import load_best
    >>> profile = load_best("sqlite:///pressroom.db", "minilm-sparsity-0.6-evopress-seed0")  # doctest: +SKIP
"""

from .results.best import Best, ResultsError, find_best, load_best

__all__ = ["Best", "ResultsError", "find_best", "load_best"]
