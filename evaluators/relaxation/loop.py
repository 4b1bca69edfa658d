"""The DASS-style gradient loop (arXiv:2207.06968) on a `RelaxedModel`; see docs/design.md.

Every unit i gets logits a_i over its levels (`Space.levels[i]`); p_i = softmax(a_i / tau),
with optional Gumbel noise and tau annealed geometrically from ``tau_start`` to ``tau_end``.
The model's weights stay frozen; only the logits train, against

    fitness(relaxed model) + mu * g + (rho / 2) * g**2,   g = (E[cost] - C) / cost_scale,

with E[cost] = sum_i p_i . c_i and mu <- mu + rho * g after every step (an augmented
Lagrangian). The augmented Lagrangian alone does not end on the budget: with Adam on a softmax
whose temperature falls, the multiplier winds up, every unit moves the same way at once, and
the logits saturate on one side of the budget (measured on the tiny Llama at 3.5 bits: 80
steps ended with the expected average at 4.0 bits, 14 % over). So the fitness is taken at the
distribution shifted onto the budget, softmax((a_i - s c_i / cost_scale) / tau), with the one
scalar s found by bisection at every step (the expected cost falls monotonically in s); the
penalty keeps the unshifted logits near the budget so that s stays small. The returned logits
are the shifted ones: their expected cost is the budget to float precision.

The relaxed weights are passed to the model with `torch.func.functional_call`: nothing is
copied into or written over the model, so the evaluator holds exactly the profile it held
before the job. After the last step the logits are returned as ``a_i / tau_end`` (their
softmax is the final distribution); the algorithm rounds them with `Space.project`. The
relaxed loss is never a result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call

from spaces import Fidelity, RelaxParams

from .. import fitness as fit
from ..data import Batch
from .model import RelaxedModel

if TYPE_CHECKING:
    from ..evaluator import Evaluator

logger = logging.getLogger(__name__)


class _Substituted(nn.Module):
    """The model, called with some parameters replaced by other tensors (nothing is written)."""

    def __init__(self, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.inner = model
        self.tensors = dict(tensors)

    def forward(self, **inputs: Any) -> Any:
        return functional_call(self.inner, self.tensors, args=(), kwargs=inputs)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No model parameter requires a gradient inside; the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def relax(evaluator: Evaluator, config: RelaxParams, fidelity: Fidelity) -> dict[str, Any]:
    """Run the DASS-style gradient loop on the evaluator's model and return the learned logits.

    Every step draws a fresh minibatch of ``fidelity.tokens`` tokens (batch
    ``(*fidelity.batch, step)``), takes the dense outputs from the evaluator's teacher cache,
    and makes one step on the logits. The evaluator's weights and settings are the same
    afterwards.

    Args:
        evaluator: the `Evaluator` (model, database, space, data, teacher).
        config: the loop's parameters (what `search.algorithms.DASS` sends); `init_logits`
            must fit the evaluator's space.
        fidelity: tokens per gradient step, the base of the minibatches' names, the split.

    Returns:
        ``{"logits": per unit, one number per level of ``space.levels[i]`` (softmax = the final
        distribution), "expected_cost": E[cost] under it, "target_cost": C, "mu": the final
        multiplier, "trace": one record per step}``; JSON-able.

    Raises:
        ValueError: `init_logits` that do not fit the space (see `RelaxParams.check_levels`), or
            more tokens than the data has.

    Example:
        >>> data = relax(evaluator, DASS(evaluator.space).ask(1)[0].params, Fidelity(512))  # doctest: +SKIP
        >>> evaluator.space.project([log_softmax(np.asarray(row)) for row in data["logits"]])  # doctest: +SKIP
    """
    space = evaluator.space
    config.check_levels(space.levels)
    start = time.perf_counter()
    relaxed = RelaxedModel(evaluator, config.init_logits, config.cost_scale)
    optimizer = torch.optim.SGD(relaxed.logits, lr=config.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(config.seed) if config.gumbel else None
    target = config.target_cost / config.cost_scale
    mu = config.mu0
    trace: list[dict[str, float]] = []
    with _frozen(evaluator.model):
        for step in range(config.steps):
            tau = config.tau(step)
            probs = relaxed.probabilities(tau)
            shift = relaxed.budget_shift(tau, config.target_cost)
            # The fitness sees the distribution shifted onto the budget (with Gumbel noise, a
            # sample around it); the penalty pulls the unshifted logits towards the budget too,
            # so that the shift stays small and no logit saturates far from it.
            sampled = relaxed.probabilities(tau, shift, generator)
            batch = evaluator.data.batch(Fidelity(fidelity.tokens, (*fidelity.batch, step), fidelity.split))
            key = (fidelity.split, (*fidelity.batch, step), fidelity.tokens)
            evaluator.statistics_forwarded += batch.tokens
            optimizer.zero_grad(set_to_none=True)
            weights = relaxed.weights(sampled)
            value, grads = _fitness_gradients(evaluator, weights, batch, key)
            gap = relaxed.expected_cost(probs) / config.cost_scale - target
            penalty = mu * gap + 0.5 * config.rho * gap.square()
            # One backward pass through the relaxation: the penalty and the fitness share it.
            outputs = [penalty, *(weights[name] for name in grads)]
            torch.autograd.backward(outputs, [torch.ones_like(penalty), *grads.values()])
            _normalise_gradients(relaxed.logits)
            optimizer.step()
            violation = float(gap.detach())
            mu += config.rho * violation
            trace.append({"step": step, "tau": tau, "fitness": value, "gap": violation, "mu": mu, "shift": shift})
            logger.debug(
                "relax step %d: tau %.3g fitness %.6g gap %+.4g mu %.4g shift %.4g",
                step,
                tau,
                value,
                violation,
                mu,
                shift,
            )
    shift = relaxed.budget_shift(config.tau_end, config.target_cost)
    with torch.no_grad():
        expected = float(relaxed.expected_cost(relaxed.probabilities(config.tau_end, shift)))
    logger.info(
        "relaxed %d units in %d steps (%.1fs): expected cost %.6g vs target %.6g (gap %+.4f per cost scale)",
        len(space), config.steps, time.perf_counter() - start, expected, config.target_cost,
        (expected - config.target_cost) / config.cost_scale,
    )  # fmt: skip
    return {
        "logits": relaxed.final_logits(config.tau_end, shift),
        "expected_cost": expected,
        "target_cost": config.target_cost,
        "mu": mu,
        "trace": trace,
    }


def _normalise_gradients(logits: Sequence[torch.Tensor]) -> None:
    """Divide every logit's gradient by the root mean square over all of them.

    The step then has a fixed size (``lr``) whatever the fitness's scale, while the units keep
    their relative sizes: which layer matters more is the whole signal. Adam, which normalises
    each coordinate on its own, erased it: on all-MiniLM-L6-v2 at 70 % sparsity every unit moved
    alike and the rounded profile was the uniform one (held-out 0.309); with this, 60 steps gave
    0.272.
    """
    grads = [a.grad for a in logits if a.grad is not None]
    if not grads:
        return
    rms = torch.cat([g.reshape(-1) for g in grads]).square().mean().sqrt()
    if rms > 0:
        for g in grads:
            g.div_(rms)


def _fitness_gradients(
    evaluator: Evaluator, weights: Mapping[str, torch.Tensor], batch: Batch, key: tuple[Any, ...]
) -> tuple[float, dict[str, torch.Tensor]]:
    """The fitness of the relaxed weights on `batch` (as `Evaluator.measure` defines it), and its
    gradient with respect to each relaxed tensor that has one.

    The model's graph is built and freed one chunk at a time, on detached copies of the
    weights; the caller pushes the summed gradients through the relaxation once.
    """
    leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
    model = _Substituted(evaluator.model, leaves)
    with torch.no_grad():
        teacher = evaluator.teacher_outputs(batch, key)
    count = batch.tokens if evaluator.task == "causal-lm" else int(batch.input_ids.shape[0])
    total = 0.0
    for chunk, reference in zip(batch.chunks(evaluator.chunk_rows()), teacher, strict=True):
        chunk = chunk.to(evaluator.device)
        outputs = evaluator.outputs(model, chunk)
        if evaluator.task == "causal-lm":
            keep = chunk.attention_mask.reshape(-1).bool()
            terms = fit.kl_terms(reference, outputs.reshape(-1, outputs.shape[-1])[keep])
        else:
            terms = fit.distortion_terms(reference, outputs, evaluator.metric)
        loss = terms.sum() / count
        torch.autograd.backward(loss)
        total += float(loss.detach())
    return total, {name: leaf.grad for name, leaf in leaves.items() if leaf.grad is not None}
