"""Shared setup for the `spaces` tests.

Tests run with ``--import-mode=importlib``, which puts no test folder on ``sys.path``; the
strategies and brute-force oracles live in ``spaces_strategies.py`` beside the tests, so this
folder is added here (conftest files load before the test modules they serve). The module has a
name no other test folder uses, so it cannot shadow or be shadowed by another folder's helpers.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
