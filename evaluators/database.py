"""The compression database: every layer's compressed weights (or ranking), on disk.

One folder per (model, scheme settings, compressor, calibration) combination, named by a hash
of them, holding one safetensors file per layer and `manifest.json` with the fingerprints and
each file's size and SHA-256, hashed once when the file is written. Nested-mask compressors
(magnitude, Wanda) store one ranking per layer that serves every level; SparseGPT and GPTQ
store one weight per setting; RTN needs no statistics; drop stores nothing. N:M levels of the
mixed scheme (negative settings) store a keep-mask (magnitude, Wanda) or a weight (SparseGPT)
under their setting. A build writes each file under a temporary name, renames it, and then
rewrites the manifest, so a killed build resumes with the layers it finished. The statistics
are gathered once, by the builder; the layers are compressed by an executor (`evaluators.building`),
here one after another or on Ray workers in parallel (`pressroom build-db --workers N`), to the
same bytes and the same manifest.

Opening checks the manifest and each file's existence and size, not its hash: re-hashing every
file on every worker start read the whole database (on the order of 100 GB for an 8B model
at 9 levels). A missing or truncated file is rebuilt, never used; a file changed in place at
the same size (a flipped bit) is found only by `verify()` (`pressroom verify-db`), which hashes
every file. Only a build or repair takes the folder's lock; a complete database opens without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from spaces import LayerInfo

from .building import NEEDS_HESSIAN, NESTED, Executor, LayerJob, in_process, sha256
from .data import Batch
from .inventory import weight_view
from .stats import collect_stats

logger = logging.getLogger(__name__)

FORMAT = "pressroom.db"
VERSION = 1
Progress = Callable[[int, int, str], None]


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the folder, so two workers on one machine never build it together."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CompressionDatabase:
    """Read access to a built database; build one with `CompressionDatabase.build`.

    Attributes:
        root: the folder.
        compressor: the compressor's name.
        manifest: the parsed manifest.
        repairs: what opening it found broken and rebuilt, one line each (a worker reports
            these to the coordinator, whose console shows them; its own log is not watched).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], repairs: Sequence[str] = ()) -> None:
        self.root = root
        self.manifest = manifest
        self.repairs = list(repairs)
        self.compressor: str = manifest["compressor"]
        self._rankings: dict[str, torch.Tensor] = {}

    @staticmethod
    def header(
        *,
        model: str,
        compressor: str,
        choices: Mapping[str, Sequence[int]],
        calibration: str,
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        """What identifies a database: everything that changes its content."""
        settings = hashlib.sha256(json.dumps(dict(choices), sort_keys=True).encode()).hexdigest()[:16]
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": model,
            "compressor": compressor,
            "settings": settings,
            "calibration": calibration if compressor not in ("rtn", "magnitude", "drop") else "none",
            "params": dict(params),
        }

    @classmethod
    def build(
        cls,
        cache_dir: Path,
        header: dict[str, Any],
        layers: Sequence[LayerInfo],
        modules: Mapping[str, torch.nn.Module],
        choices: Mapping[str, Sequence[int]],
        *,
        model: torch.nn.Module,
        batch: Callable[[], Batch],
        progress: Progress | None = None,
        executor: Executor = in_process,
    ) -> CompressionDatabase:
        """Open the database for `header`, building or repairing whatever is missing or corrupt.

        Args:
            cache_dir: the folder that holds databases.
            header: from `header()`.
            layers: the inventory's layers.
            modules: module name -> module (their weights must be dense).
            choices: per layer, every setting to store (`Space.layer_choices()`).
            model: the dense model (to gather input statistics).
            batch: returns the statistics tokens (called only if some layer needs building).
            progress: called with (done, total, layer name) after each layer.
            executor: runs the layers' compression (`evaluators.building.in_process`: here, one
                after another; `workers.build_executor`: on Ray workers in parallel).
        """
        key = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(cache_dir).expanduser() / "db" / key
        manifest, todo, repairs = cls._check(root, header, layers)
        if todo:  # check again under the lock: another worker may have just built them
            with _locked(root):
                manifest, todo, repairs = cls._check(root, header, layers)
                for line in repairs:
                    logger.warning("%s", line)
                if todo:
                    logger.info(
                        "building the %s database in %s: %d of %d layers to do",
                        header["compressor"], root, len(todo), len(layers),
                    )  # fmt: skip
                    cls._build_layers(
                        root, manifest, todo, modules, choices, model, batch, progress, len(layers), executor
                    )
        return cls(root, manifest, repairs)

    @classmethod
    def _check(
        cls, root: Path, header: dict[str, Any], layers: Sequence[LayerInfo]
    ) -> tuple[dict[str, Any], list[LayerInfo], list[str]]:
        """The manifest, the layers to (re)build and why: the cheap check, sizes and no hashes."""
        repairs: list[str] = []
        manifest = cls._load_manifest(root, header, repairs)
        todo = [layer for layer in layers if not cls._present(root, manifest, layer.name, repairs)]
        return manifest, todo, repairs

    @staticmethod
    def _load_manifest(root: Path, header: dict[str, Any], repairs: list[str]) -> dict[str, Any]:
        path = root / "manifest.json"
        if path.exists():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                repairs.append(f"the manifest {path} is unreadable: rebuilding the database")
            else:
                if {k: manifest.get(k) for k in header} == header:
                    return dict(manifest)
                repairs.append(f"the manifest {path} belongs to another database: rebuilding it")
        return {**header, "layers": {}}

    @staticmethod
    def _present(root: Path, manifest: dict[str, Any], name: str, repairs: list[str]) -> bool:
        """Whether the layer's entry is in the manifest and its file exists at the recorded size;
        if not, drops the entry (so it is rebuilt) and says why in `repairs`."""
        entry = manifest["layers"].get(name)
        if entry is None:
            return False
        if entry["file"] is None:
            return True
        path = root / entry["file"]
        if not path.exists():
            repairs.append(f"database file {path} is missing: rebuilding it")
        elif (size := path.stat().st_size) != entry["bytes"]:
            repairs.append(f"database file {path} has {size} bytes, the manifest says {entry['bytes']}: rebuilding it")
        else:
            return True
        del manifest["layers"][name]
        return False

    @classmethod
    def _build_layers(
        cls,
        root: Path,
        manifest: dict[str, Any],
        todo: Sequence[LayerInfo],
        modules: Mapping[str, torch.nn.Module],
        choices: Mapping[str, Sequence[int]],
        model: torch.nn.Module,
        batch: Callable[[], Batch],
        progress: Progress | None,
        total: int,
        executor: Executor,
    ) -> None:
        """Gather the statistics once, have `executor` compress and write each layer, and add
        each entry to the manifest (rewritten after each, so a killed build resumes)."""
        compressor = manifest["compressor"]
        done = total - len(todo)

        def jobs() -> Iterator[LayerJob]:
            if compressor in ("wanda", *NEEDS_HESSIAN):
                groups = collect_stats(model, dict(modules), todo, batch(), hessian=compressor in NEEDS_HESSIAN)
            else:  # magnitude, RTN and drop need no statistics
                groups = iter([dict.fromkeys((layer.name for layer in todo), None)])
            for group in groups:
                for name, stats in group.items():
                    weight = weight_view(modules[name])
                    yield LayerJob(name, compressor, weight, tuple(choices[name]), stats, manifest["params"])

        for name, entry in executor(root, jobs()):
            if entry["file"] is not None and not (root / entry["file"]).exists():
                raise RuntimeError(
                    f"a worker wrote {entry['file']} for layer {name}, but {root} does not have it: build-db's "
                    "workers must share the database folder (see docs/deploy.md)"
                )
            manifest["layers"][name] = entry
            _write_json(root / "manifest.json", manifest)
            done += 1
            if progress:
                progress(done, total, name)

    # --- checking -------------------------------------------------------------------------------

    def verify(self, progress: Progress | None = None) -> dict[str, str]:
        """Hash every file the manifest names against its recorded SHA-256 (which opening does not).

        Args:
            progress: called with (done, total, layer name) after each layer.

        Returns:
            layer name -> one line naming its bad file and what is wrong; empty when all match.
        """
        bad: dict[str, str] = {}
        entries = sorted(self.manifest["layers"].items())
        for done, (name, entry) in enumerate(entries, 1):
            if entry["file"] is not None:
                path = self.root / entry["file"]
                if not path.exists():
                    bad[name] = f"{path}: missing (layer {name})"
                elif sha256(path) != entry["sha256"]:
                    bad[name] = f"{path}: SHA-256 does not match the manifest (layer {name})"
            if progress:
                progress(done, len(entries), name)
        return bad

    def discard(self, names: Sequence[str]) -> None:
        """Drop the named layers from the manifest (under the folder's lock), so the next open
        rebuilds them. Their files stay until the rebuild replaces each (an atomic rename), so a
        worker of a running search that reads one meanwhile never finds it missing."""
        with _locked(self.root):
            manifest = json.loads((self.root / "manifest.json").read_text())
            for name in names:
                manifest["layers"].pop(name, None)
            _write_json(self.root / "manifest.json", manifest)
            self.manifest = manifest
            self._rankings.clear()

    # --- reading --------------------------------------------------------------------------------

    @property
    def nested(self) -> bool:
        return self.compressor in NESTED

    def ranking(self, name: str) -> torch.Tensor:
        """The layer's pruning order (first = pruned first), cut after the largest stored count."""
        if name not in self._rankings:
            self._rankings[name] = self._read(name, "ranking").long()
        return self._rankings[name]

    def weight(self, name: str, setting: int) -> torch.Tensor:
        """The stored compressed weight of a layer at a setting, shape (out, in); for an N:M
        setting of magnitude or Wanda, its keep-mask (bool)."""
        return self._read(name, f"s{setting}")

    def _read(self, name: str, key: str) -> torch.Tensor:
        entry = self.manifest["layers"].get(name)
        if entry is None or entry["file"] is None:
            raise KeyError(f"the {self.compressor} database in {self.root} stores nothing for layer {name!r}")
        with safe_open(str(self.root / entry["file"]), framework="pt") as handle:
            if key not in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
                raise KeyError(f"the {self.compressor} database has no {key!r} for layer {name!r}")
            return handle.get_tensor(key)
