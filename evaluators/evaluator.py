"""`Evaluator`: a model, its compression database, its data and its dense teacher, on one device.

`evaluate(profile, fidelity)` switches only the layers whose setting differs from the profile the
model holds, forwards exactly `fidelity.tokens` tokens, and compares the outputs with the dense
model's on the same tokens.

Example:
    >>> from evaluators import Evaluator, EvaluatorSpec
    >>> ev = Evaluator(EvaluatorSpec.model_validate({"model": {"name": "pressroom:tiny-llama"}}))  # doctest: +SKIP
    >>> ev.evaluate(ev.space.uniform(), Fidelity(512, batch=(0, 0))).fitness  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spaces import Fidelity, Profile

from . import fitness as fit
from .building import Executor, in_process
from .caches import PrefixCache, TeacherCache, find_blocks
from .compressors.nm import nm_weight
from .config import EvaluatorSpec
from .data import Batch, TokenData
from .database import CompressionDatabase, Progress
from .inventory import build_space, take_inventory, weight_view
from .models import LoadedModel, load_model, max_positions
from .quality.perplexity import Perplexity, sliding_perplexity
from .startup import StartTimer
from .stats import collect_stats, owl_outlier_ratios

logger = logging.getLogger(__name__)

#: Activation memory one forward chunk of a causal LM may use for its logits.
LOGITS_BUDGET_BYTES = 256 << 20
DENSE_BITS = 16


@dataclass(frozen=True)
class EvalResult:
    """One evaluation.

    Attributes:
        fitness: the mean distortion per token (KL) or per sequence (embeddings); lower is better.
        tokens: tokens forwarded.
        seconds: wall time, switching and teacher included.
        switched: layers whose weights were rewritten.
        perplexity: held-out perplexity of a causal LM (sliding windows, see `Evaluator.perplexity`),
            on held-out evaluations.
        reused: the share of block passes taken from the prefix cache instead of computed.
    """

    fitness: float
    tokens: int
    seconds: float
    switched: int
    perplexity: float | None = None
    reused: float = 0.0


class Evaluator:
    """Holds one model replica and measures profiles on it.

    Args:
        spec: model, task, compression, data, seed and cache folder.
        device: where the model runs.
        progress: called as the compression database is built (done, total, layer).
        loaded: an already loaded model (tests reuse one); it is modified in place.
        executor: compresses the database's layers where it needs building (in this process by
            default; `workers.build_executor` spreads them over Ray workers).

    Attributes:
        start: the start-up steps (model, data, teacher, database), each logged as it ends with
            its wall and CPU seconds; a worker reports them to the coordinator.

    Raises:
        ValueError: a spec the model or data cannot satisfy, with the reason.
    """

    def __init__(
        self,
        spec: EvaluatorSpec,
        *,
        device: str | torch.device = "cpu",
        progress: Progress | None = None,
        loaded: LoadedModel | None = None,
        executor: Executor = in_process,
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.start = StartTimer(logger)
        with self.start.step("loaded model"):
            self.loaded = loaded or load_model(spec.model, spec.task, self.device, spec.cache_dir)
        self.model = self.loaded.model
        self.task = self.loaded.task
        self.metric = spec.data.metric
        if self.metric == "auto":
            self.metric = "kl" if self.task == "causal-lm" else "cosine"
        if (self.metric == "kl") != (self.task == "causal-lm"):
            raise ValueError(f"data.metric {self.metric!r} does not fit a {self.task} model")
        positions = max_positions(self.model)
        if positions is not None and spec.data.seq_len > positions:
            raise ValueError(
                f"data.seq_len {spec.data.seq_len} is more than model {spec.model.name!r} has positions for "
                f"(max_position_embeddings {positions}); use data.seq_len <= {positions}"
            )
        self.inventory = take_inventory(self.model, spec.compression)
        self.space = build_space(self.inventory, spec.compression, self.loaded.fingerprint)
        self.cache_dir = Path(spec.cache_dir).expanduser()
        with self.start.step("prepared data"):
            self.data = TokenData(spec.data, self.loaded.tokenizer, self.task, spec.seed, self.cache_dir)
        self._modules = self.inventory.modules
        with self.start.step("built the dense teacher"):
            self._dense = {name: m.weight.detach().clone() for name, m in self._modules.items()}
            self._dense_bias = {
                name: m.bias.detach().clone()
                for name, m in self._modules.items()
                if getattr(m, "bias", None) is not None
            }
            self.teacher_model = self._share_dense()
        self._current: dict[str, int | None] = dict.fromkeys(self._modules)
        #: Tokens the statistics jobs (layer errors, OWL ratios, the relaxation) have forwarded so
        #: far: one pass of ``data.stats_tokens`` per group of blocks `collect_stats` gathers.
        self.statistics_forwarded = 0
        self._orders: dict[str, torch.Tensor] = {}
        self._block_of = {layer.name: layer.block for layer in self.inventory.layers}
        self.prefix = PrefixCache(find_blocks(self.model, list(self._modules)), spec.data.prefix_cache_mb << 20)
        self._zero = torch.zeros((), dtype=next(self.model.parameters()).dtype, device=self.device)
        self._teacher: TeacherCache[list[Any]] = TeacherCache(
            spec.data.teacher_cache_mb << 20, lambda parts: sum(_nbytes(p) for p in parts)
        )
        with self.start.step("opened the compression database"):
            self.db = self.open_database(progress, executor)

    # --- setup ----------------------------------------------------------------------------------

    def _share_dense(self) -> nn.Module:
        """A teacher that shares every tensor with the model except the compressible layers'
        weights and biases, which point at the dense copies: no extra memory, no switching."""
        memo: dict[int, Any] = {id(t): t for t in itertools.chain(self.model.parameters(), self.model.buffers())}
        teacher = copy.deepcopy(self.model, memo)
        for name in self._modules:
            module = teacher.get_submodule(name)
            module.weight = nn.Parameter(self._dense[name], requires_grad=False)
            if name in self._dense_bias:
                module.bias = nn.Parameter(self._dense_bias[name], requires_grad=False)
        return teacher.eval()

    def open_database(self, progress: Progress | None = None, executor: Executor = in_process) -> CompressionDatabase:
        """Open the compression database, building whatever is missing (also after
        `CompressionDatabase.discard`, which is how `pressroom verify-db --repair` rebuilds),
        its layers compressed by `executor` (see `CompressionDatabase.build`)."""
        compression = self.spec.compression
        choices = self.space.layer_choices()
        header = CompressionDatabase.header(
            model=self.loaded.fingerprint,
            compressor=str(compression.compressor),
            choices=choices,
            calibration=f"{self.data.fingerprint}:{self.spec.data.stats_tokens}",
            params=compression.database_params(),
        )
        return CompressionDatabase.build(
            self.cache_dir,
            header,
            self.inventory.layers,
            self._modules,
            choices,
            model=self.model,
            batch=lambda: self.data.first(self.spec.data.stats_tokens),
            progress=progress,
            executor=executor,
        )

    # --- switching ------------------------------------------------------------------------------

    def apply(self, profile: Profile | Mapping[str, int] | None) -> int:
        """Make the model hold `profile` (None = dense); returns how many layers changed."""
        return self.restore(dict.fromkeys(self._modules) if profile is None else self.space.layer_settings(profile))

    def restore(self, settings: Mapping[str, int | None]) -> int:
        """Make the named layers hold `settings` (what `settings()` returned; None = dense);
        returns how many layers changed."""
        switched = 0
        for name, setting in settings.items():
            if self._current[name] != setting:
                self._set_layer(name, setting)
                self._current[name] = setting
                switched += 1
        return switched

    def _set_layer(self, name: str, setting: int | None) -> None:
        self.prefix.changed(self._block_of[name])
        module = self._modules[name]
        scheme = self.spec.compression.scheme
        weight = module.weight.data
        with torch.no_grad():
            if name in self._dense_bias:
                module.bias.data.copy_(self._dense_bias[name])
            if (
                setting is None
                or (scheme == "bitwidth" and setting >= DENSE_BITS)
                or (scheme == "drop" and not setting)
            ):
                weight.copy_(self._dense[name])
            elif scheme == "drop":  # the sub-block's output becomes zero: only the residual passes
                weight.zero_()
                if name in self._dense_bias:
                    module.bias.data.zero_()
            elif setting < 0:  # an N:M level of the mixed scheme: a stored keep-mask or weight
                dense = weight_view(self.teacher_model.get_submodule(name))
                weight_view(module).copy_(nm_weight(self.db.weight(name, setting), dense))
            elif self.db.nested:  # a comparison, not a scatter: streams through memory once
                torch.where(self.pruning_order(name) < setting, self._zero, self._dense[name], out=weight)
            else:
                weight_view(module).copy_(self.db.weight(name, setting))

    def pruning_order(self, name: str) -> torch.Tensor:
        """Each weight's position in the layer's pruning order, in the weight's own layout."""
        if name not in self._orders:
            module = self._modules[name]
            ranking = self.db.ranking(name)
            order = torch.full((module.weight.numel(),), module.weight.numel(), dtype=torch.int32)
            order[ranking] = torch.arange(ranking.numel(), dtype=torch.int32)
            view = order.view(weight_view(module).shape)  # (out, in), the ranking's layout
            self._orders[name] = (view.t() if type(module).__name__ == "Conv1D" else view).contiguous().to(self.device)
        return self._orders[name]

    def settings(self) -> dict[str, int | None]:
        """The per-layer settings the model holds now (None = dense)."""
        return dict(self._current)

    # --- measuring ------------------------------------------------------------------------------

    def chunk_rows(self) -> int:
        """Rows (sequences) per forward chunk: what keeps a causal LM's logits within budget."""
        if self.task == "encoder":
            return 64
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        return max(1, LOGITS_BUDGET_BYTES // (self.data.seq_len * vocab * 4))

    def outputs(self, model: nn.Module, chunk: Batch) -> torch.Tensor:
        """What the fitness compares: `model`'s logits (causal LMs) or mean-pooled embeddings."""
        if self.task == "causal-lm":  # no KV cache: nothing is generated, and stand-in blocks fill none
            return model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask, use_cache=False).logits
        out = model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask)
        return fit.mean_pool(out.last_hidden_state, chunk.attention_mask)  # (B, H)

    @property
    def teacher_cache(self) -> TeacherCache[list[Any]]:
        """The dense teacher's outputs kept per minibatch (its size and hit counts, for reports)."""
        return self._teacher

    def teacher_outputs(self, batch: Batch, key: tuple[Any, ...]) -> list[Any]:
        """The dense teacher's outputs on `batch`, one part per chunk (`chunk_rows`), from the
        teacher cache under `key` (computed on a miss)."""

        def compute() -> list[Any]:
            parts: list[Any] = []
            for chunk in batch.chunks(self.chunk_rows()):
                chunk = chunk.to(self.device)
                outputs = self.outputs(self.teacher_model, chunk)
                if self.task == "causal-lm":
                    keep = chunk.attention_mask.reshape(-1).bool()
                    parts.append(
                        fit.teacher_topk(outputs.reshape(-1, outputs.shape[-1])[keep], self.spec.data.teacher_topk)
                    )
                else:
                    parts.append(outputs)
            return parts

        return self._teacher.get(key, compute)

    @torch.no_grad()
    def measure(self, fidelity: Fidelity) -> EvalResult:
        """The fitness of whatever the model holds now, on `fidelity`'s tokens."""
        start = time.perf_counter()
        batch = self.data.batch(fidelity)
        key = (fidelity.split, fidelity.batch, fidelity.tokens)
        teacher = self.teacher_outputs(batch, key)
        total, count = 0.0, 0
        hidden = int(self.model.config.hidden_size)
        reused = self.prefix.reused
        self.prefix.begin(key, batch.input_ids.numel() * hidden * self._zero.element_size())
        for index, (chunk, reference) in enumerate(zip(batch.chunks(self.chunk_rows()), teacher, strict=True)):
            chunk = chunk.to(self.device)
            try:
                with self.prefix.replay(index):
                    outputs = self.outputs(self.model, chunk)
            except BaseException:
                self.prefix.changed(0)  # a half-forwarded minibatch leaves nothing to reuse
                raise
            if self.task == "causal-lm":
                keep = chunk.attention_mask.reshape(-1).bool()
                total += fit.kl_sum(reference, outputs.reshape(-1, outputs.shape[-1])[keep])
                count += int(keep.sum())
            else:
                total += fit.distortion_sum(reference, outputs, self.metric)
                count += outputs.shape[0]
        self.prefix.end()
        passes = len(self.prefix.blocks) * len(teacher)
        share = (self.prefix.reused - reused) / passes
        return EvalResult(total / count, batch.tokens, time.perf_counter() - start, 0, None, share)

    def perplexity(self, tokens: int) -> Perplexity:
        """The perplexity of whatever the model holds now on the first `tokens` held-out tokens, by
        the sliding-window evaluation: windows of `data.seq_len` tokens every `data.seq_len // 2`."""
        batch = self.data.first(tokens, "heldout")
        stream = batch.input_ids[batch.attention_mask.bool()]  # a causal LM's blocks are one stream cut up
        return sliding_perplexity(self.model, stream, self.data.seq_len, self.data.seq_len // 2, self.chunk_rows())

    def evaluate(self, profile: Profile | Mapping[str, int] | None, fidelity: Fidelity) -> EvalResult:
        """Switch to `profile` (None = dense) and measure it on `fidelity`'s tokens."""
        start = time.perf_counter()
        switched = self.apply(profile)
        result = self.measure(fidelity)
        ppl = (
            self.perplexity(fidelity.tokens).value if fidelity.split == "heldout" and self.task == "causal-lm" else None
        )
        seconds = time.perf_counter() - start
        return EvalResult(result.fitness, result.tokens, seconds, switched, ppl, result.reused)

    def heldout(self, profile: Profile | Mapping[str, int] | None, tokens: int | None = None) -> EvalResult:
        """The profile's fitness (and perplexity, for causal LMs) on the held-out split."""
        return self.evaluate(profile, Fidelity(tokens or self.spec.data.heldout_tokens, (0,), "heldout"))

    # --- statistics jobs ------------------------------------------------------------------------

    def layer_errors(self) -> dict[str, dict[str, float]]:
        """Per layer and setting: tr((W-Wc) H (W-Wc)^T) / tr(W H W^T), H from the statistics tokens.

        The additive-error baseline sums these, assuming errors add up across layers.
        """
        saved = self.settings()
        choices = self.space.layer_choices()
        errors: dict[str, dict[str, float]] = {}
        batch = self.data.first(self.spec.data.stats_tokens)
        self.apply(None)
        for group in collect_stats(self.model, self._modules, self.inventory.layers, batch, hessian=True):
            self.statistics_forwarded += batch.tokens
            for name, stats in group.items():
                assert stats.hessian is not None
                dense = weight_view(self._modules[name]).float().clone()
                base = float(((dense @ stats.hessian) * dense).sum())
                errors[name] = {}
                for setting in choices[name]:
                    self._set_layer(name, setting)
                    diff = dense - weight_view(self._modules[name]).float()
                    errors[name][str(setting)] = float(((diff @ stats.hessian) * diff).sum()) / max(base, 1e-30)
                self._set_layer(name, None)
        self.restore(saved)
        return errors

    def owl_ratios(self, m: float) -> dict[str, float]:
        """OWL's per-block outlier ratios (keys are block indices as strings)."""
        saved = self.settings()
        self.apply(None)
        batch = self.data.first(self.spec.data.stats_tokens)
        stats: dict[str, Any] = {}
        for group in collect_stats(self.model, self._modules, self.inventory.layers, batch, hessian=False):
            self.statistics_forwarded += batch.tokens
            stats.update(group)
        ratios = owl_outlier_ratios(self._modules, self.inventory.layers, stats, m)  # on the dense weights
        self.restore(saved)
        return {str(block): ratio for block, ratio in ratios.items()}


def _nbytes(part: Any) -> int:
    if isinstance(part, fit.TopK):
        return part.nbytes
    return int(part.numel() * part.element_size())
