"""Using what a search found: the best profile, its formats for other tools, figures, the dashboard.

`best` reads a study's answer (or its best completed trial), space and spec back from storage;
`exports` writes and reads a profile in the formats other tools take (JSON, a layer map,
llm-compressor recipes, EvoPress's configuration text); `figures` draws the best profile and
the fitness history; `comparison` renders `pressroom compare`'s table (rich, CSV, Markdown) and
its figure; `dashboard` publishes the figures to Optuna's artifact store during a search and
serves optuna-dashboard over the storage; `summary` turns a profile into the few Optuna
parameters a trial gets for the dashboard's plots; `readable` makes the dashboard's study
attributes one line each and gives a COMPLETE trial a note naming its profile per layer.
"""
