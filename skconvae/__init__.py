"""skconvae: a convolutional autoencoder that behaves like a scikit-learn transformer."""

from ._net import AutoencoderNet
from ._transformer import ConvAutoencoderTransformer

__version__ = "0.1.0"

__all__ = ["AutoencoderNet", "ConvAutoencoderTransformer", "__version__"]
