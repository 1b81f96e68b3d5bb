"""MCMC diagnostics of attack chains: effective sample size and R-hat, as ArviZ defines them.

A trace is a ``[chains, draws]`` tensor of one scalar per chain state (a sample's loss, or whether it
fools the model). Both diagnostics follow Vehtari et al. (2021) as ArviZ 0.23 implements them (split
chains, rank normalization, folding): docs/evaluation.md, "MCMC diagnostics of attack chains".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ESS_METHODS = ("bulk", "mean")
RHAT_METHODS = ("rank", "split")
#: The fewest draws per chain the diagnostics accept (ArviZ's minimum).
MIN_DRAWS = 4


def _trace(draws: Tensor, least_chains: int = 1) -> Tensor:
    if not isinstance(draws, Tensor) or draws.dim() != 2:
        raise ValueError(f"a trace must be a [chains, draws] tensor, got {getattr(draws, 'shape', type(draws))}")
    chains, length = draws.shape
    if chains < least_chains or length < MIN_DRAWS:
        raise ValueError(
            f"a trace needs at least {least_chains} chain(s) of {MIN_DRAWS} draws, got {chains} of {length}"
        )
    return draws.detach().to(device="cpu", dtype=torch.float64)


def split_chains(draws: Tensor) -> Tensor:
    """``[chains, draws]`` to ``[2 chains, draws // 2]``: first halves, then second halves (middle draw dropped)."""
    half = draws.shape[1] // 2
    return torch.cat([draws[:, :half], draws[:, draws.shape[1] - half :]])


def normal_scores(draws: Tensor) -> Tensor:
    """The draws replaced by ``Phi^-1((rank - 3/8) / (n + 1/4))`` of their ranks over all chains (ties averaged)."""
    flat = draws.reshape(-1)
    order = torch.argsort(flat, stable=True)
    ranks = torch.empty_like(flat)
    ranks[order] = torch.arange(1, flat.numel() + 1, dtype=flat.dtype)
    # Tied values share the mean of their ranks.
    values, inverse = torch.unique(flat, return_inverse=True)
    sums = torch.zeros(values.numel(), dtype=flat.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(values.numel(), dtype=flat.dtype).index_add_(0, inverse, torch.ones_like(flat))
    averaged = (sums / counts)[inverse]
    scores: Tensor = torch.special.ndtri((averaged - 3 / 8) / (flat.numel() + 1 / 4))
    return scores.reshape(draws.shape)


def autocovariance(draws: Tensor) -> Tensor:
    """The biased autocovariance ``c_k = sum_i (x_i - m)(x_(i+k) - m) / n`` of every chain, for every lag k."""
    length = draws.shape[1]
    centered = draws - draws.mean(dim=1, keepdim=True)
    spectrum = torch.fft.rfft(centered, n=2 * length, dim=1)
    covariance: Tensor = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * length, dim=1)
    return covariance[:, :length] / length


def _is_constant(draws: Tensor) -> bool:
    return bool((draws.max() - draws.min()) < torch.finfo(torch.float64).resolution)


def _ess(draws: Tensor) -> float:
    """Effective sample size of a (split) trace: Geyer's initial monotone sequence estimator."""
    if not bool(torch.isfinite(draws).all()):
        return math.nan
    if _is_constant(draws):
        return float(draws.numel())
    chains, length = draws.shape
    covariance = autocovariance(draws)
    mean_variance = float(covariance[:, 0].mean()) * length / (length - 1)
    variance_plus = mean_variance * (length - 1) / length
    if chains > 1:
        variance_plus += float(draws.mean(dim=1).var())
    mean_covariance = covariance.mean(dim=0).tolist()
    rho = [0.0] * length
    rho[0] = even = 1.0
    rho[1] = odd = 1.0 - (mean_variance - mean_covariance[1]) / variance_plus
    # Initial positive sequence: sum pairs of autocorrelations while the pair sum stays positive.
    t = 1
    while t < length - 3 and even + odd > 0:
        even = 1.0 - (mean_variance - mean_covariance[t + 1]) / variance_plus
        odd = 1.0 - (mean_variance - mean_covariance[t + 2]) / variance_plus
        if even + odd >= 0:
            rho[t + 1], rho[t + 2] = even, odd
        t += 2
    last = t - 2
    if even > 0:
        rho[last + 1] = even
    # Initial monotone sequence: pair sums may not increase.
    t = 1
    while t <= last - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
        t += 2
    size = chains * length
    tau = -1.0 + 2.0 * sum(rho[: last + 1]) + sum(rho[last + 1 : last + 2])
    tau = max(tau, 1 / math.log10(size))
    return size / tau


def _median(draws: Tensor) -> Tensor:
    """The median as numpy takes it: the mean of the two middle values of an even count."""
    ordered = draws.reshape(-1).sort().values
    middle = ordered.numel() // 2
    return ordered[middle] if ordered.numel() % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _rhat(draws: Tensor) -> float:
    """R-hat of chains as given: ``sqrt((B / W + n - 1) / n)`` with B = n var(chain means), W = mean chain variance."""
    if not bool(torch.isfinite(draws).all()) or _is_constant(draws):
        return math.nan
    length = draws.shape[1]
    between = length * float(draws.mean(dim=1).var())
    within = float(draws.var(dim=1).mean())
    if within == 0:
        return math.nan
    return math.sqrt((between / within + length - 1) / length)


def effective_sample_size(draws: Tensor, method: str = "bulk") -> float:
    """Effective sample size of a ``[chains, draws]`` trace over all its chains (ArviZ's ``ess``).

    ``method="bulk"`` (the default) ranks and normal-scores the split chains first; ``"mean"`` uses the
    raw draws, the ESS of the mean. Independent draws give about ``chains * draws``; an AR(1) trace with
    coefficient phi about ``chains * draws * (1 - phi) / (1 + phi)``.
    """
    if method not in ESS_METHODS:
        raise ValueError(f"unknown ESS method {method!r}; choose one of {ESS_METHODS}")
    split = split_chains(_trace(draws))
    if method == "bulk":
        if not bool(torch.isfinite(split).all()):
            return math.nan
        split = normal_scores(split)
    return _ess(split)


def rhat(draws: Tensor, method: str = "rank") -> float:
    """Split R-hat of a ``[chains, draws]`` trace (ArviZ's ``rhat``); about 1 when the chains agree.

    ``method="rank"`` (the default) is the larger of the rank-normalized R-hat and that of the draws
    folded about their median, which also sees chains that differ in spread; ``"split"`` is the
    classic split R-hat on raw draws. Values above 1.01 (Vehtari et al.) mean the chains have not
    mixed. NaN for a constant trace. At least 2 chains are needed, as in ArviZ.
    """
    if method not in RHAT_METHODS:
        raise ValueError(f"unknown R-hat method {method!r}; choose one of {RHAT_METHODS}")
    split = split_chains(_trace(draws, least_chains=2))
    if method == "split":
        return _rhat(split)
    if not bool(torch.isfinite(split).all()) or _is_constant(split):
        return math.nan
    bulk = _rhat(normal_scores(split))
    folded = _rhat(normal_scores((split - _median(split)).abs()))
    return max(bulk, folded)
