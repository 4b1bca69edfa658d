"""MLflow: one tracking run per search, and the model registry for what a search found.

`tracker` (`MlflowTracker`) logs a search's spec, progress, figures and held-out results to a
run on a background thread; `model_registry` (`register_best`) applies a study's best profile,
logs the compressed model into that same run and registers it as a version of an MLflow
registered model (the model registry, not the registry of search algorithms in
`search.algorithms`), so the version's run is the search's run.
"""
