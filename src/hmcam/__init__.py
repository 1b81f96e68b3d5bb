"""hmcam: probabilistic adversarial attack and learning (Wang, Li, Liu & Lin, T-PAMI 2020)."""

from hmcam.core.version import __version__
from hmcam.models.wrappers import Ensemble, Normalize

__all__ = ["Ensemble", "Normalize", "__version__"]
