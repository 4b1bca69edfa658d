"""A profile's compressed model written to disk: `export` saves it in the model's own dense
layout (any `transformers` runtime loads it); `checkpoint` writes what serving engines load
packed: compressed-tensors checkpoints for bitwidth profiles, shallower models for depth ones.
"""
