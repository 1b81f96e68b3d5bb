"""Attack chains for ArviZ: the loss and success traces of every example as chains x draws.

:func:`to_inference_data` turns a :class:`~hmcam.attacks.chain.ChainResult` into an ArviZ
``InferenceData`` (the optional extra ``arviz``), so an MCMC user gets ArviZ's plots and
diagnostics on an attack's chains; :func:`write_netcdf` saves it as a netCDF-4 file (HDF5, through
``h5netcdf``, which ArviZ installs), atomically. Every variable has dims ``(chain, draw, example)``:

- ``posterior``: ``loss`` (the objective J of each chain state, float64), ``success`` (1 where the
  state fools the model, int8) and ``prediction`` (the state's predicted class, int64);
- ``sample_stats``: ``energy`` (H of the state), ``acceptance_rate`` (the Metropolis-Hastings
  acceptance probability of the transition) and ``accepted`` (bool).

``az.ess(data, method="bulk")`` and ``az.rhat(data, method="rank")`` on the export equal hmcam's
own per-example diagnostics (:mod:`hmcam.evaluation.mcmc`, ``loss_ess`` / ``loss_rhat`` and
``success_ess`` / ``success_rhat`` of :func:`hmcam.evaluation.sampling.diagnose`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from hmcam.core.storage import atomic_write

if TYPE_CHECKING:
    from hmcam.attacks.chain import ChainResult

#: The extra that installs ArviZ, named in the error when it is missing.
EXTRA = "arviz"
#: ArviZ group, variable name and the ChainResult field it holds, with the dtype it is stored in.
VARIABLES: tuple[tuple[str, str, str, type[np.generic]], ...] = (
    ("posterior", "loss", "objective", np.float64),
    ("posterior", "success", "success", np.int8),
    ("posterior", "prediction", "prediction", np.int64),
    ("sample_stats", "energy", "energy", np.float64),
    ("sample_stats", "acceptance_rate", "acceptance_probability", np.float64),
    ("sample_stats", "accepted", "accepted", np.bool_),
)


def _arviz() -> Any:
    """The ``arviz`` module; an ImportError naming the extra when it is not installed."""
    # Deferred on purpose: ArviZ (with xarray, pandas, h5netcdf) is an optional extra that hmcam's
    # core must not need; only this export imports it.
    try:
        with warnings.catch_warnings():  # ArviZ 0.23 announces its coming 1.0 refactor on import: not our users' news
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError:
        raise ImportError(f"the ArviZ export needs ArviZ: pip install 'hmcam[{EXTRA}]'") from None
    return arviz


def check_export(path: str | os.PathLike[str], attack: str, has_chains: bool) -> Path:
    """``path`` checked before ``attack`` runs: ArviZ installed, a chain attack, a ``.nc`` file that can be made.

    ``has_chains`` says whether ``attack`` is a chain attack (HMCAM, HMC); errors are one line.
    """
    target = Path(path)
    if target.suffix != ".nc":
        raise ValueError(f"--arviz {target}: the file must end in .nc (netCDF)")
    if target.is_dir():
        raise IsADirectoryError(f"--arviz {target} is a folder; give a file name such as {target / 'chains.nc'}")
    for place in target.parents:
        if place.exists() and not place.is_dir():
            raise NotADirectoryError(f"--arviz {target}: {place} is a file, not a folder")
    if not has_chains:
        raise ValueError(f"--arviz exports chains; attack {attack!r} has none (use hmcam or hmc)")
    _arviz()
    return target


def chains_draws_examples(values: Tensor, chains: int) -> np.ndarray[Any, Any]:
    """A ChainResult field ([S, B], or [S, C, B] with C > 1 chains) as a ``(chain, draw, example)`` array."""
    if values.dim() != (2 if chains == 1 else 3):
        raise ValueError(f"expected a [S, B] or [S, C, B] trace, got shape {tuple(values.shape)}")
    arranged = values.unsqueeze(0) if chains == 1 else values.permute(1, 0, 2)
    return arranged.detach().cpu().contiguous().numpy()


def trace_arrays(result: ChainResult) -> dict[str, dict[str, np.ndarray[Any, Any]]]:
    """Every exported variable of ``result``, by ArviZ group and name, as ``(chain, draw, example)`` arrays."""
    groups: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
    for group, name, field, dtype in VARIABLES:
        array = chains_draws_examples(getattr(result, field), result.chains)
        # float64 as hmcam's diagnostics compute (float32 states converted, not rounded).
        groups.setdefault(group, {})[name] = array.astype(dtype)
    return groups


def to_inference_data(
    result: ChainResult,
    *,
    examples: Sequence[int] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """``result`` as an ArviZ ``InferenceData`` (see the module docstring for its groups and variables).

    ``examples`` labels the example coordinate (default ``0 .. B-1``, e.g. dataset indices instead);
    ``attrs`` (the attack's settings, say) go into both groups' attributes, ``None`` values dropped
    and booleans stored as 0 / 1, as netCDF requires.
    """
    arviz = _arviz()
    arrays = trace_arrays(result)
    batch = next(iter(arrays["posterior"].values())).shape[2]
    labels = list(range(batch)) if examples is None else [int(index) for index in examples]
    if len(labels) != batch:
        raise ValueError(f"examples must label the {batch} examples of the chains, got {len(labels)} labels")
    dims = {name: ["example"] for _, name, _, _ in VARIABLES}
    data = arviz.from_dict(
        posterior=arrays["posterior"], sample_stats=arrays["sample_stats"], coords={"example": labels}, dims=dims
    )
    # Set on each group: from_dict's own ``attrs`` argument does not reach them in ArviZ 0.23.
    for group in arrays:
        data[group].attrs.update(netcdf_attributes(attrs or {}))
    return data


def netcdf_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as netCDF can store them: None dropped, booleans as 0 / 1, anything else not a number as text."""
    stored: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            stored[key] = int(value)
        elif isinstance(value, (int, float, str)):
            stored[key] = value
        else:
            stored[key] = str(value)
    return stored


def write_netcdf(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write the ``InferenceData`` ``data`` to ``path`` (netCDF-4) atomically; returns the path.

    ArviZ writes to a temporary file first, whose bytes then replace ``path`` in one rename
    (:func:`hmcam.core.storage.atomic_write`), so a kill leaves the old file or the new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        scratch = Path(tmp) / "chains.nc"
        data.to_netcdf(str(scratch))
        atomic_write(target, scratch.read_bytes())
    return target


def read_netcdf(path: str | os.PathLike[str]) -> Any:
    """The ``InferenceData`` saved at ``path`` (ArviZ's ``from_netcdf``, loaded into memory)."""
    arviz = _arviz()
    return arviz.from_netcdf(str(path))
