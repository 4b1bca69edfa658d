"""The `pressroom` command line: one module per group of commands, wired together in `app`.

`common` holds what every command shares (consoles, `UsageError`, the `--storage` option, reading
a spec); `prepare` checks specs and builds compression databases, `searches` runs, compares and
lists searches, `launch` submits a search to a Ray cluster, `results` serves, exports, applies
and registers what searches found, and `zeroshot` measures a profile's zero-shot accuracy with
lm-evaluation-harness. `app` registers each command on the typer app; `main`, the console
script's entry point, turns user errors into one message and exit code 2.
"""

from .app import main

__all__ = ["main"]
