"""The network inference runs: the trained one, rewritten where that is exact and faster.

Two rewrites, each applied where a container (``nn.Sequential``) holds the pattern:

* **Batch norm folded into the convolution before it.** In eval mode a batch norm
  layer is a fixed per-channel affine map, and the convolution before it is linear in
  its input: the two compose into one convolution with rescaled weights and a shifted
  bias (``torch.nn.utils.fusion``). Inference skips a pass over the block's
  activations. Results equal the trained network's up to float rounding.
* **ReLU moved after the max pooling that follows it.** ReLU is monotone, so the
  maximum of rectified values is the rectified maximum, bit for bit (NaN included):
  ``relu(maxpool(x)) == maxpool(relu(x))``. Rectifying after pooling touches a quarter
  of the values (2-D, pool 2), in place on the pooled output.

On a CPU those passes over activations are a large share of a small network's time:
in the first block of ``filters=(16, 8)`` on 28x28 images the convolution writes
12,544 values an image, and batch norm and ReLU each read and rewrote all of them
(measured on the 2-core CPU with MNIST: the encoder with batch norm ran 10-25% faster
folded). Training never runs the rewritten network: batch norm normalises by the batch
there, and autograd needs the layers as they are.

The rewritten network shares everything else with the trained one: it is a shallow
copy whose containers hold the trained modules, but for each folded pair a
convolution of its own and an identity, and for each moved ReLU the pooling layer then
an in-place ReLU. The folded convolutions are recomputed from the trained layers when
they may have changed: after each training loop (the net calls
:meth:`InferenceNetwork.invalidate`; fused Adam's step changes weights without
counting it in their version counters), and whenever a pair's tensor has a new storage
or version (``load_state_dict``, ``to(device)``, any in-place change). A module trained
outside skconvae by a fused optimizer needs ``invalidate()`` too. Recomputing on every
call instead would cost 0.2 ms a call on the 2-core CPU, a sixth of a one-sample
``transform``. Being the same object across weight changes, the rewritten network
keeps a compiled copy of it valid.
"""

from __future__ import annotations

import copy
import itertools
import threading

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm`` right after ``conv`` is a fixed affine map on its channels."""
    return (
        isinstance(conv, _CONVS)
        and isinstance(norm, _BatchNorm)
        and not (conv.training or norm.training)
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
        and not (_hooked(conv) or _hooked(norm))
    )


def _commute(relu: nn.Module, pool: nn.Module) -> bool:
    """Whether ``pool`` right after ``relu`` may run first (a plain max, no indices)."""
    return (
        type(relu) is nn.ReLU
        and isinstance(pool, _MAX_POOLS)
        and not pool.return_indices
        and not (_hooked(relu) or _hooked(pool))
    )


def _pair_tensors(pairs) -> list[torch.Tensor | None]:
    return [
        t
        for conv, norm, _ in pairs
        for t in (conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.weight,
                  norm.bias)
    ]  # fmt: skip


def _version_key(tensors) -> tuple:
    return tuple(None if t is None else (t.data_ptr(), t._version) for t in tensors)


class InferenceNetwork:
    """The network inference runs: the trained module, or its rewritten copy.

    One lives on each net; calling it with the net's module returns the network
    that inference runs, its folded convolutions computed from the module's
    current weights.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(
    ...     nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
    ... ).eval()
    >>> fast = InferenceNetwork()(net)
    >>> fast
    Sequential(
      (0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))
      (1): Identity()
      (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
      (3): ReLU(inplace=True)
    )
    >>> x = torch.randn(2, 1, 8, 8)
    >>> torch.allclose(fast(x), net(x), atol=1e-6)
    True
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._structure = None  # which modules the rewritten copy was built from
        self._versions = None  # the state of the tensors its convolutions came from
        self._rewritten: nn.Module | None = None
        self._pairs: list[tuple[nn.Module, _BatchNorm, nn.Module]] = []

    def __call__(self, module: nn.Module) -> nn.Module:
        structure = (id(module), *((id(m), m.training) for m in module.modules()))
        # Tensors made under a caller's inference mode could not be refreshed outside it.
        with self._lock, torch.inference_mode(False):
            if structure != self._structure:
                self._build(module)
                self._structure = structure
            if self._rewritten is module:  # nothing to rewrite
                return module
            versions = _version_key(_pair_tensors(self._pairs))
            if versions != self._versions:
                self._refresh()
                self._versions = versions
            return self._rewritten

    def invalidate(self) -> None:
        """Recompute the folded convolutions at the next call (after training)."""
        with self._lock:
            self._versions = None

    def _build(self, module: nn.Module) -> None:
        self._pairs, self._versions = [], None
        self._rewritten = self._rewrite(module)

    def _rewrite(self, module: nn.Module) -> nn.Module:
        """A shallow copy of ``module`` with the patterns rewritten, or ``module``
        itself when nothing under it is."""
        children = dict(module._modules)
        changed = False
        for name, child in children.items():
            if child is not None:
                rewritten = self._rewrite(child)
                changed |= rewritten is not child
                children[name] = rewritten
        if isinstance(module, nn.Sequential):
            names = list(children)
            for first, second in itertools.pairwise(names):
                conv, norm = module._modules[first], module._modules[second]
                if children[first] is conv and _foldable(conv, norm):
                    # The copy's own convolution: the same shapes and memory format.
                    children[first] = fuse_conv_bn_eval(conv, norm)
                    children[second] = nn.Identity()
                    self._pairs.append((conv, norm, children[first]))
                    changed = True
            for first, second in itertools.pairwise(names):
                relu, pool = children[first], children[second]
                if _commute(relu, pool):
                    children[first], children[second] = pool, nn.ReLU(inplace=True)
                    changed = True
        if not changed:
            return module
        clone = copy.copy(module)
        clone._modules = children
        return clone

    @torch.no_grad()
    def _refresh(self) -> None:
        for conv, norm, folded in self._pairs:
            # fuse_conv_bn_weights' arithmetic, written into the folded layer's tensors.
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shift = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
            shift = shift * scale
            if norm.bias is not None:
                shift = shift + norm.bias
            weight = conv.weight
            if (folded.weight.device, folded.weight.dtype) != (weight.device, weight.dtype):
                folded.weight = nn.Parameter(torch.empty_like(weight), requires_grad=False)
                folded.bias = nn.Parameter(torch.empty_like(shift), requires_grad=False)
            torch.mul(weight, scale.reshape(-1, *[1] * (weight.dim() - 1)), out=folded.weight)
            folded.bias.copy_(shift)
