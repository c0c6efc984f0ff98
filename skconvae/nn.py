"""The plain PyTorch modules behind skconvae, for use outside scikit-learn."""

from ._network import ConvAutoencoder, ReconstructionLoss

__all__ = ["ConvAutoencoder", "ReconstructionLoss"]
