"""The network inference runs: the trained one, rewritten where that is exact and faster.

Four rewrites, each applied where a container (``nn.Sequential``) holds the pattern:

* **Batch norm folded into the convolution before it.** In eval mode a batch norm
  layer is a fixed per-channel affine map, and the convolution before it is linear in
  its input: the two compose into one convolution with rescaled weights and a shifted
  bias (``torch.nn.utils.fusion``). Inference skips a pass over the block's
  activations. Results equal the trained network's up to float rounding.
* **ReLU moved after the max pooling that follows it.** ReLU is monotone, so the
  maximum of rectified values is the rectified maximum, bit for bit (NaN included):
  ``relu(maxpool(x)) == maxpool(relu(x))``. Rectifying after pooling touches a quarter
  of the values (2-D, pool 2), in place on the pooled output.
* **2x2 max pooling on the CPU as two elementwise maxima of strided views**, first of
  each pair of rows, then of each pair of columns: the same maxima, bit for bit, where
  torch's pooling kernel also writes each maximum's index. For the classic
  encoder's pooling of 512 images (16x28x28, channels-last order), 3.2 ms against
  1.3 ms timed alone, 2.2 ms inside the encoder; on other devices the pooling
  kernel runs.
* **Nearest upsampling and the convolution after it run as one sub-pixel
  convolution.** Each output pixel of ``conv(upsample(x))`` at phase ``a`` of the
  upsampling (its row modulo the scale factor) reads the same input value for the
  kernel taps that fall on the same upsampled block, so the convolution's taps sum
  into one small kernel per phase, applied to ``x`` itself: one convolution with a
  channel per phase and output channel, then a copy that interleaves the phases into
  the output grid (a pixel shuffle). Zero padding agrees, since a tap falls outside
  the upsampled image exactly when its block falls outside ``x``. The upsampled
  activations (scale factor squared times the input's) are never written. Results
  equal the trained network's up to float rounding (taps summed into one weight). On
  the CPU only, where it was measured; on other devices the trained layers run.

On a CPU those passes over activations are a large share of a small network's time:
in the first block of ``filters=(16, 8)`` on 28x28 images the convolution writes
12,544 values an image, and batch norm and ReLU each read and rewrote all of them
(measured on the 2-core CPU with MNIST: the encoder with batch norm ran 10-25% faster
folded). In the classic decoder the upsampling and the last convolution took 9.4 ms
for 512 images, the sub-pixel convolution and its shuffle 4.6 ms: ``inverse_transform``
ran 1.5-1.8x faster. Training never runs the rewritten network: batch norm normalises
by the batch there, and autograd needs the layers as they are.

The rewritten network shares everything else with the trained one: it is a shallow
copy whose containers hold the trained modules, but for each folded pair a
convolution of its own and an identity, for each moved ReLU the pooling layer then
an in-place ReLU, for each 2x2 max pooling its pairwise form, and for each upsampling
an identity then the sub-pixel convolution. The computed weights are recomputed from
the trained layers when they may have changed: after each training loop (the net
calls :meth:`InferenceNetwork.invalidate`; fused Adam's step changes weights without
counting it in their version counters), and whenever a trained tensor they come from
has a new storage or version (``load_state_dict``, ``to(device)``, any in-place
change). A module trained outside skconvae by a fused optimizer needs
``invalidate()`` too. Recomputing on every call instead would cost 0.2 ms a call on
the 2-core CPU, a sixth of a one-sample ``transform``. Being the same object across
weight changes, the rewritten network keeps a compiled copy of it valid.
"""

from __future__ import annotations

import copy
import itertools
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import skip_init
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
# The sub-pixel weights of a 1-D or 2-D convolution, from per-dimension tap maps.
_PHASE_SUMS = {1: "arp,oip->aoir", 2: "arp,bsq,oipq->aboirs"}


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


def _pairwise(pool: nn.Module) -> bool:
    """Whether ``pool`` is a plain 2x2 max pooling (see :class:`PairwiseMaxPool2d`)."""
    return (
        type(pool) is nn.MaxPool2d
        and pool.kernel_size in (2, (2, 2))
        and pool.stride in (2, (2, 2))
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
        and not (pool.ceil_mode or pool.return_indices or _hooked(pool))
    )


class PairwiseMaxPool2d(nn.Module):
    """``nn.MaxPool2d(2)``: on the CPU, the maximum of each pair of rows, then of each
    pair of columns (odd last rows and columns dropped, as pooling drops them).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(2, 3, 7, 9)
    >>> torch.equal(PairwiseMaxPool2d()(x), torch.nn.MaxPool2d(2)(x))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return F.max_pool2d(x, 2)
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _upsampling_scale(upsample: nn.Module, conv: nn.Module) -> int | None:
    """The integer scale factor when ``conv(upsample(x))`` runs as a sub-pixel
    convolution (see :class:`SubPixelConv`), else ``None``."""
    if not (
        type(upsample) is nn.Upsample
        and upsample.mode == "nearest"
        and upsample.size is None
        and type(conv) in (nn.Conv1d, nn.Conv2d)
        and not conv.training
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and all(s == 1 for s in conv.stride)
        and all(d == 1 for d in conv.dilation)
        and all(k % 2 for k in conv.kernel_size)
        and conv.padding in ("same", tuple(k // 2 for k in conv.kernel_size))
        and not (_hooked(upsample) or _hooked(conv))
    ):
        return None
    factors = upsample.scale_factor
    factors = set(factors) if isinstance(factors, tuple) else {factors}
    if len(factors) != 1:
        return None
    (factor,) = factors
    return int(factor) if float(factor).is_integer() and factor >= 2 else None


def _phase_taps(kernel_size: int, scale: int) -> torch.Tensor:
    """``(scale, k', kernel_size)`` 0/1 map: which of a kernel's taps, at each phase of
    the upsampling, read the input value at each offset of a ``k'``-tap kernel on the
    input grid (tap ``p`` of output ``scale * i + a`` reads input
    ``i + (a + p - kernel_size // 2) // scale``)."""
    half = kernel_size // 2
    offsets = [[(a + p - half) // scale for p in range(kernel_size)] for a in range(scale)]
    reach = max(abs(o) for row in offsets for o in row)
    taps = torch.zeros(scale, 2 * reach + 1, kernel_size)
    for a, row in enumerate(offsets):
        for p, offset in enumerate(row):
            taps[a, offset + reach, p] = 1.0
    return taps


class SubPixelConv(nn.Module):
    """``conv(nn.Upsample(scale_factor=scale, mode="nearest")(x))`` computed on ``x``'s
    grid: a convolution with ``scale ** d * out_channels`` outputs (channels ordered by
    phase, then output channel), interleaved into the upsampled grid.

    On the CPU only, where it was measured; elsewhere ``conv`` runs on the upsampled
    input, as trained.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 2, 3, padding=1)).eval()
    >>> sub = SubPixelConv(up[1], 2)
    >>> sub.refresh()
    >>> x = torch.randn(4, 3, 5, 7)
    >>> sub(x).shape, torch.allclose(sub(x), up(x), atol=1e-6)
    (torch.Size([4, 2, 10, 14]), True)
    """

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, scale: int):
        super().__init__()
        self.scale = scale
        self.source = conv
        self.out_channels = conv.out_channels
        self.taps = [_phase_taps(k, scale) for k in conv.kernel_size]
        kernel = tuple(t.shape[1] for t in self.taps)
        phases = scale ** len(kernel)
        # No initial draws from torch's global generator: refresh() writes the weights.
        self.conv = skip_init(
            type(conv),
            conv.in_channels,
            phases * conv.out_channels,
            kernel,
            padding=tuple(k // 2 for k in kernel),
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        ).requires_grad_(False)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the sub-pixel weights from the source convolution's."""
        conv = self.source
        weight = conv.weight
        taps = [t.to(weight.device, weight.dtype) for t in self.taps]
        summed = torch.einsum(_PHASE_SUMS[len(taps)], *taps, weight)
        summed = summed.reshape(self.conv.weight.shape)
        # After the trained layers moved (``to(device)``, another dtype), follow them.
        self.conv.to(weight.device, weight.dtype)
        # In place, as the folded convolutions are: a compiled copy stays valid.
        self.conv.weight.copy_(summed)
        if conv.bias is not None:
            self.conv.bias.copy_(conv.bias.repeat(self.scale ** len(taps)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return self.source(F.interpolate(x, scale_factor=float(self.scale), mode="nearest"))
        y = self.conv(x)
        n, s, c, grid = len(y), self.scale, self.out_channels, y.shape[2:]
        layout = torch.contiguous_format
        if (
            y.dim() == 4
            and not y.is_contiguous()
            and y.is_contiguous(memory_format=torch.channels_last)
        ):
            layout = torch.channels_last
        out = torch.empty(
            (n, c, *(g * s for g in grid)), dtype=y.dtype, device=y.device, memory_format=layout
        )
        d = len(grid)
        # y's channels are (phase per dimension..., channel): put each phase beside its
        # position, one copy into the output's own layout.
        phased = y.unflatten(1, (s,) * d + (c,))
        order = [0, d + 1] + [i for k in range(d) for i in (d + 2 + k, 1 + k)]
        out.view(n, c, *(x for g in grid for x in (g, s))).copy_(phased.permute(order))
        return out


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
      (2): PairwiseMaxPool2d()
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
        # (trained convolution, its sub-pixel form: from it, or from its folded copy)
        self._upsampled: list[tuple[nn.Module, SubPixelConv]] = []

    def __call__(self, module: nn.Module) -> nn.Module:
        structure = (id(module), *((id(m), m.training) for m in module.modules()))
        # Tensors made under a caller's inference mode could not be refreshed outside it.
        with self._lock, torch.inference_mode(False):
            if structure != self._structure:
                self._build(module)
                self._structure = structure
            if self._rewritten is module:  # nothing to rewrite
                return module
            versions = _version_key(self._sources())
            if versions != self._versions:
                self._refresh()
                self._versions = versions
            return self._rewritten

    def invalidate(self) -> None:
        """Recompute the folded convolutions at the next call (after training)."""
        with self._lock:
            self._versions = None

    def _sources(self) -> list[torch.Tensor | None]:
        """The trained tensors the rewritten layers' weights are computed from."""
        convs = [(trained.weight, trained.bias) for trained, _ in self._upsampled]
        return _pair_tensors(self._pairs) + [t for pair in convs for t in pair]

    def _build(self, module: nn.Module) -> None:
        self._pairs, self._upsampled, self._versions = [], [], None
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
            for name in names:
                if _pairwise(children[name]):
                    children[name] = PairwiseMaxPool2d()
                    changed = True
            for first, second in itertools.pairwise(names):
                upsample, conv = children[first], children[second]
                scale = _upsampling_scale(upsample, conv)
                if scale is not None:
                    children[first], children[second] = nn.Identity(), SubPixelConv(conv, scale)
                    trained = module._modules[second]
                    self._upsampled.append((trained, children[second]))
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
        # After the folds: a sub-pixel convolution may come from a folded one.
        for _, subpixel in self._upsampled:
            subpixel.refresh()
