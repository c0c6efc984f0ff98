"""The plain PyTorch modules behind skconvae, for use outside scikit-learn."""

from ._network import ConvAutoencoder, ImageToImageNet, ReconstructionLoss

__all__ = ["ConvAutoencoder", "ImageToImageNet", "ReconstructionLoss"]
