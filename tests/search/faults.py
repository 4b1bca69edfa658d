"""Injected storage faults: a SQLAlchemy hook that rejects writes to one table as the database would.

In a test process, `Reject(...)` is a context manager. A `pressroom` subprocess gets the same hook
through `sitecustomize(tmp_path, table, skip)`: a `sitecustomize.py` that the subprocess imports
at start-up when the returned folder is on its PYTHONPATH.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_WRITE = re.compile(r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)


class Reject:
    """Reject every write to `table` (whose parameters mention `holding`) after the first `skip`,
    at most `times` of them (None: all).

    The rejection is the driver's own `error` (IntegrityError: a refused row; OperationalError: a
    lost connection), so SQLAlchemy and Optuna see what such a database would give them.
    """

    def __init__(
        self, table: str, skip: int = 0, times: int | None = None, holding: str = "", error: str = "IntegrityError"
    ) -> None:
        self.table, self.skip, self.times, self.holding, self.error = table, skip, times, holding, error
        self.seen = 0
        self.rejected = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        found = _WRITE.match(statement)
        if found is None or found.group(1) != self.table or self.holding not in str(parameters):
            return
        self.seen += 1
        if self.seen > self.skip and (self.times is None or self.rejected < self.times):
            self.rejected += 1
            raise getattr(conn.dialect.loaded_dbapi, self.error)(f"injected: {self.table} rejects this row")

    def __enter__(self) -> Reject:
        event.listen(Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self)


def sitecustomize(folder: Path, table: str, **kwargs: Any) -> str:
    """A folder holding a `sitecustomize.py` that installs `Reject(table, **kwargs)` in any Python
    process started with the folder first on PYTHONPATH; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import faults\n"
        f"faults.Reject({table!r}, **{kwargs!r}).__enter__()\n"
    )
    return str(folder)
