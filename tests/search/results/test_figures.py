"""The search's figures say which fitness they show: the search's, on calibration minibatches."""

from __future__ import annotations

import numpy as np

from search.results.figures import (
    HISTORY_AXIS,
    HISTORY_TITLE,
    LOWEST_LABEL,
    PARENT_LABEL,
    WINNER_LABEL,
    history_figure,
    profile_figure,
)
from tests.search.harness import sparsity_space


def test_the_history_figure_names_its_data_on_the_title_axis_and_legend():
    history = [
        {"generation": 1, "fitness": 0.30, "best_fitness": 0.30, "parent_fitness": 0.35},
        {"generation": 2, "fitness": 0.32, "best_fitness": 0.30, "parent_fitness": 0.32},  # a harder minibatch
        {"generation": 3, "fitness": 0.25, "best_fitness": 0.25, "parent_fitness": 0.29},
    ]
    (ax,) = history_figure(history).axes
    assert ax.get_title() == HISTORY_TITLE and "calibration" in HISTORY_TITLE
    assert ax.get_ylabel() == HISTORY_AXIS and "calibration" in HISTORY_AXIS
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == [LOWEST_LABEL, WINNER_LABEL, PARENT_LABEL]


def test_the_profile_figure_says_its_fitness_is_the_search_fitness_on_calibration_data():
    space = sparsity_space(8)
    (ax, *_) = profile_figure(space, space.sample(np.random.default_rng(0)), fitness=0.0123).axes
    assert "search fitness 0.0123 (calibration data)" in ax.get_title()
