"""Running searches: everything between a validated spec and a finished, recorded study.

`run` builds a whole search (storage, Ray workers, algorithm, tracking) and reports held-out
results; `coordinator` is its loop (ask, dispatch, collect, record, tell, checkpoint);
`progress` is the live terminal view; `latency_search` adds the latency table, estimate and
final check of latency-aware searches; `compare` runs several methods at one token budget.
"""
