"""The plain PyTorch modules behind skconvae, for use outside scikit-learn."""

from ._image_networks import ImageToImageNet, ResidualImageNet
from ._network import ConvAutoencoder, ReconstructionLoss

__all__ = ["ConvAutoencoder", "ImageToImageNet", "ReconstructionLoss", "ResidualImageNet"]
