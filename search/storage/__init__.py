"""Everything a search stores in its Optuna storage, and how it gets there safely.

`study` reads and writes one search's study (trials, checkpoints, the evaluation log, the
fingerprint check); `trial_store` stores a batch of trial rows in one transaction, directly in
Optuna's schema where it knows it and through Optuna's public API otherwise; `writer` is the
background thread that folds the coordinator's events into such batches and retries them while
the database is away; `lease` keeps one live coordinator per study.
"""
