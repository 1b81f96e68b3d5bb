"""hmcam: probabilistic adversarial attack and learning (Wang, Li, Liu & Lin, T-PAMI 2020)."""

from hmcam.models.wrappers import Ensemble, Normalize

__version__ = "0.1.0"

__all__ = ["Ensemble", "Normalize", "__version__"]
