"""skconvae: a convolutional autoencoder that behaves like a scikit-learn transformer."""

from ._distributed import dask_setup  # noqa: F401  (Dask's hook for preload=["skconvae"])
from ._exceptions import (
    FitInterruptedWarning,
    ModelFileError,
    NonFiniteLossError,
    NotFittedError,
    SkconvaeError,
)
from ._net import AutoencoderNet
from ._persistence import load, save
from ._regressor import ConvAutoencoderRegressor
from ._transformer import ConvAutoencoderTransformer

__version__ = "0.1.0"

__all__ = [
    "AutoencoderNet",
    "ConvAutoencoderRegressor",
    "ConvAutoencoderTransformer",
    "FitInterruptedWarning",
    "ModelFileError",
    "NonFiniteLossError",
    "NotFittedError",
    "SkconvaeError",
    "__version__",
    "load",
    "save",
]
