"""What a user judges a compressed model by, beyond the search's own fitness: held-out
perplexity by the standard sliding-window evaluation (`perplexity`), and zero-shot accuracy
through lm-evaluation-harness with pressroom's shipped offline tasks (`zeroshot`, `tasks/`).

`zeroshot` imports lm-eval only when called, so this package loads without it.
"""
