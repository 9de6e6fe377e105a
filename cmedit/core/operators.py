"""Editing operators: an orthogonal transform ``A`` and the mask ``Omega`` (docs/design.md, section 3).

An operator says which components of an image are known and which are generated.
It holds no model. ``A`` maps a pixel tensor ``(B, C, H, W)`` into "A-space";
``A^T`` maps back and, because ``A`` is orthogonal, ``A^T A = I``.

Mask polarity, everywhere in cmedit: ``mask`` (``Omega``) is 1 for a component
to GENERATE and 0 for a component KNOWN from the reference image ``y``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, as in the paper's colorization operator.
LUMINANCE = (0.2989, 0.5870, 0.1140)


class Operator:
    """An orthogonal linear transform ``A`` with a generate-mask ``Omega`` in A-space.

    Subclasses implement :meth:`A`, :meth:`AT` and :meth:`mask`. A user's own
    operator only needs these three; :meth:`project` is shared.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Map pixels ``(B, C, H, W)`` to A-space."""
        raise NotImplementedError

    def AT(self, a: torch.Tensor) -> torch.Tensor:
        """Map A-space back to pixels; the inverse of :meth:`A` (``A`` is orthogonal)."""
        raise NotImplementedError

    def mask(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``Omega`` for pixel tensors of ``shape``: 1 = generate, 0 = known; broadcastable to ``A(x)``."""
        raise NotImplementedError

    def known_part(self, y: torch.Tensor) -> torch.Tensor:
        """``y0 = A^T[(A y) * (1 - Omega)]``: the known components of ``y`` only (Algorithm 4)."""
        omega = self.mask(y.shape, y.device, y.dtype)
        return self.AT(self.A(y) * (1 - omega))

    def project(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """The masked projection ``P(x) = A^T[(A y)(1 - Omega) + (A x) Omega]``, with ``y0 = known_part(y)``.

        Written as ``y0 + A^T[(A x) Omega]`` so the known part is computed once per edit.
        """
        omega = self.mask(x.shape, x.device, x.dtype)
        return y0 + self.AT(self.A(x) * omega)

    def project_noisy(self, x: torch.Tensor, y0: torch.Tensor, eta: float) -> torch.Tensor:
        """The regularised back-projection ``x + A^+_eta (y - A x)`` for a noisy ``y`` (``eta > 0``).

        ``A`` being orthogonal, every known component has singular value 1: it moves the fraction
        ``1 / (1 + eta)`` of the way from ``x`` to ``y`` (``eta = 0`` is :meth:`project`).
        """
        omega = self.mask(x.shape, x.device, x.dtype)
        return x + self.AT(self.A(y0 - x) * ((1 - omega) / (1 + eta)))

    def fit_range(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bring a projected ``x`` into ``[-1, 1]`` without changing its known components.

        Clipping ``P(x)`` would change them (a bright grey pixel with any colour leaves the RGB
        cube). Instead move ``x`` towards ``y``, which is in range and has the same known part:
        ``x' = y + alpha (x - y)`` with the largest ``alpha <= 1`` that fits. ``x - y`` lies in the
        generated subspace, so any scalar ``alpha`` per sample keeps the known part exactly;
        patch operators use one ``alpha`` per patch.
        """
        alpha = _range_scale(x, y).flatten(1).amin(dim=1).view(-1, 1, 1, 1)
        return (y + alpha * (x - y)).clamp(-1, 1)

    def check_shape(self, shape: torch.Size) -> None:
        """Raise ``ValueError`` if this operator cannot act on pixel tensors of ``shape``."""

    # Scales the pixel noise level in the noisy projection's eta (cmedit.core.noise): the ratio of a
    # measured direction's noise to its prior spread. 1 for the orthogonal operators: a block mean's
    # (or the luminance's) coefficient carries the factor (1 / |lum|) in its noise and in its spread alike.
    noise_gain: float = 1.0

    def _cast(self, name: str, tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``tensor`` on ``device`` in ``dtype``, cast once and reused: the sampling loop asks every step.

        Without the cache a CUDA run would copy the mask (or ``Q``) host to device at every step;
        operators are therefore treated as immutable once built. The copy is made outside
        inference mode so that it stays usable where autograd is on.
        """
        cache = self.__dict__.setdefault("_cast_cache", {})
        key = (name, torch.device(device), dtype)
        if key not in cache:
            with torch.inference_mode(False):
                cache[key] = tensor.to(device=device, dtype=dtype)
        return cache[key]

    def resized(self, size: tuple[int, int]) -> "Operator":
        """The same edit for images resized to ``size`` (H, W); size-agnostic operators return themselves."""
        return self

    def window(self, rows: slice, cols: slice) -> "Operator | None":
        """The same edit on the window ``[rows, cols]`` of its images, for an operator that acts per pixel
        or per patch (projection, known part and range fit of a window are the window's of the whole);
        ``None`` otherwise, as here: :meth:`fit_range` fits one ``alpha`` per image. Whole-image edits
        use it to make their full-size steps a band at a time (``cmedit.fullres.bands``)."""
        return None


def _range_scale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per entry, the largest ``alpha`` in ``[0, 1]`` with ``y + alpha (x - y)`` inside ``[-1, 1]``."""
    d = x - y
    bound = torch.where(d > 0, 1 - y, -1 - y)
    alpha = torch.where(d != 0, bound / torch.where(d != 0, d, torch.ones_like(d)), torch.ones_like(d))
    return alpha.clamp(0, 1)


class Inpainting(Operator):
    """Inpainting: ``A`` is the identity and ``Omega`` is the user's mask, per pixel, all channels.

    ``mask``: ``(B or 1, 1, H, W)`` or ``(H, W)`` tensor, 1 (or True) = generate, 0 = keep.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        mask = torch.as_tensor(mask)
        if mask.ndim == 2:
            mask = mask[None, None]
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"inpainting mask must have shape (H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
        self._mask = (mask > 0.5).float()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def AT(self, a: torch.Tensor) -> torch.Tensor:
        return a

    def mask(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self._cast("mask", self._mask, device, dtype)

    def project(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        # Identity A: skip the two no-op transforms and blend directly.
        return y0 + x * self.mask(x.shape, x.device, x.dtype)

    def fit_range(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Known pixels are y itself and generated ones were clipped: nothing leaves the range.
        return x.clamp(-1, 1)

    def window(self, rows: slice, cols: slice) -> "Inpainting":
        return Inpainting(self._mask[..., rows, cols])

    def resized(self, size: tuple[int, int]) -> "Inpainting":
        # A resized pixel is generated if any pixel it covers is: the model never sees masked content.
        return Inpainting(F.interpolate(self._mask, size=size, mode="area") > 0)

    def check_shape(self, shape: torch.Size) -> None:
        b, _, h, w = self._mask.shape
        if (h, w) != tuple(shape[-2:]):
            raise ValueError(f"mask size {w}x{h} does not match image size {shape[-1]}x{shape[-2]}")
        if b not in (1, shape[0]):
            raise ValueError(f"mask batch {b} does not match image batch {shape[0]}")


def luminance_basis() -> torch.Tensor:
    """The 3x3 orthogonal ``Q`` whose first column is the normalised luminance vector (QR decomposition)."""
    lum = torch.tensor(LUMINANCE, dtype=torch.float64)
    seed = torch.eye(3, dtype=torch.float64)
    seed[:, 0] = lum
    q, _ = torch.linalg.qr(seed)
    # QR fixes each column only up to sign; make the luminance column sum positive.
    return (q * torch.sign(q[:, 0].sum())).contiguous()


def patch_mean_basis(factor: int) -> torch.Tensor:
    """The ``(p^2, p^2)`` orthogonal ``Q`` whose first column is constant ``1/p`` (the patch mean direction)."""
    n = factor * factor
    seed = torch.eye(n, dtype=torch.float64)
    seed[:, 0] = 1.0
    q, _ = torch.linalg.qr(seed)
    return (q * torch.sign(q[:, 0].sum())).contiguous()


class PatchOperator(Operator):
    """``A`` applies ``Q^T`` to every non-overlapping ``p x p`` patch, flattened channel-major.

    The patch vector of a ``C``-channel image has ``C * p^2`` entries ordered as
    ``c * p^2 + i * p + j`` (``torch.nn.functional.pixel_unshuffle``'s order).
    ``known`` is a boolean vector of that length: True for components known from ``y``.
    Colorization (``p = 1``), super-resolution and their composition are all of this form.
    """

    def __init__(self, q: torch.Tensor, known: torch.Tensor, patch: int = 1, channels: int = 3) -> None:
        n = channels * patch * patch
        if q.shape != (n, n) or known.shape != (n,):
            raise ValueError(f"Q must be ({n}, {n}) and known ({n},) for {channels} channels and patch {patch}")
        if not torch.allclose(q.T.double() @ q.double(), torch.eye(n, dtype=torch.float64), atol=1e-6):
            raise ValueError("Q is not orthogonal")
        self.q = q.double()
        self.known = known.bool()
        self._omega = (~self.known).float()[None, :, None, None]
        # Q Omega Q^T: the projection onto the generated components of one patch, in pixel space.
        self._generate_projector = (self.q * (~self.known).double()) @ self.q.T
        self.patch = patch
        self.channels = channels

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        return self._cast("q", self.q, x.device, x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x
        return torch.einsum("ji,bjhw->bihw", self._q(x), patches)  # Q^T per patch

    def AT(self, a: torch.Tensor) -> torch.Tensor:
        patches = torch.einsum("ij,bjhw->bihw", self._q(a), a)  # Q per patch
        return F.pixel_shuffle(patches, self.patch) if self.patch > 1 else patches

    def project(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """:meth:`Operator.project` as one matrix product per patch: ``y0 + (Q Omega Q^T) x``.

        The same map as ``y0 + A^T[(A x) Omega]`` (up to float rounding) with one product instead of
        two; a subclass that redefines ``A``, ``AT`` or ``mask`` gets the general form.
        """
        cls = type(self)
        if cls.A is not PatchOperator.A or cls.AT is not PatchOperator.AT or cls.mask is not PatchOperator.mask:
            return super().project(x, y0)
        projector = self._cast("generate_projector", self._generate_projector, x.device, x.dtype)
        patches = F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x
        generated = torch.matmul(projector, patches.flatten(2)).view(patches.shape)
        return y0 + (F.pixel_shuffle(generated, self.patch) if self.patch > 1 else generated)

    def fit_range(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """As :meth:`Operator.fit_range`, with one ``alpha`` per patch (patches are independent)."""
        alpha = _range_scale(x, y)
        if self.patch > 1:
            alpha = -F.max_pool2d(-alpha, self.patch)
        alpha = alpha.amin(dim=1, keepdim=True)
        if self.patch > 1:
            alpha = alpha.repeat_interleave(self.patch, dim=2).repeat_interleave(self.patch, dim=3)
        return (y + alpha * (x - y)).clamp(-1, 1)

    def mask(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self._cast("mask", self._omega, device, dtype)

    def window(self, rows: slice, cols: slice) -> "PatchOperator | None":
        """Itself, for windows aligned to the patches; ``None`` for a subclass with its own maps."""
        cls = type(self)
        if any(getattr(cls, name) is not getattr(PatchOperator, name)
               for name in ("A", "AT", "mask", "project", "project_noisy", "known_part", "fit_range")):
            return None
        if any((s.start or 0) % self.patch for s in (rows, cols)):
            raise ValueError(f"a window of a patch operator must start at a multiple of {self.patch}")
        return self

    def check_shape(self, shape: torch.Size) -> None:
        if shape[1] != self.channels:
            raise ValueError(f"operator expects {self.channels} channels, image has {shape[1]}")
        if shape[-1] % self.patch or shape[-2] % self.patch:
            raise ValueError(f"factor {self.patch} does not divide image size {shape[-1]}x{shape[-2]}")

    def __and__(self, other: "PatchOperator") -> "PatchOperator":
        """Compose two channel-separable operators, e.g. ``Colorization() & SuperResolution(4)``."""
        return compose(self, other)


class Colorization(PatchOperator):
    """Colorization: per pixel, luminance (``Q^T x`` channel 0) is known, the two chroma channels are generated."""

    def __init__(self) -> None:
        super().__init__(luminance_basis(), torch.tensor([True, False, False]), patch=1, channels=3)


class SuperResolution(PatchOperator):
    """Super-resolution by ``factor``: per channel and ``p x p`` patch, the patch mean is known."""

    def __init__(self, factor: int, channels: int = 3) -> None:
        if factor < 1:
            raise ValueError(f"super-resolution factor must be >= 1, got {factor}")
        q_patch = patch_mean_basis(factor)
        known_patch = torch.zeros(factor * factor, dtype=torch.bool)
        known_patch[0] = True
        super().__init__(
            torch.kron(torch.eye(channels, dtype=torch.float64), q_patch),
            known_patch.repeat(channels),
            patch=factor,
            channels=channels,
        )
        self.factor = factor


def compose(first: PatchOperator, second: PatchOperator) -> PatchOperator:
    """Kronecker product of a per-pixel channel operator and a per-channel patch operator.

    ``first`` acts across channels per pixel (``patch == 1``, e.g. :class:`Colorization`);
    ``second`` acts on each channel's ``p x p`` patch the same way for every channel
    (e.g. :class:`SuperResolution`). A component is known only when it is known in both,
    so colorize + super-resolve keeps just the luminance patch mean (docs/design.md, section 3).
    """
    if first.patch != 1:
        first, second = second, first
    if first.patch != 1:
        raise ValueError("compose needs one per-pixel operator (patch 1), e.g. Colorization")
    c, p = first.channels, second.patch
    n = p * p
    if second.channels != c:
        raise ValueError("composed operators must act on the same number of channels")
    q_patch = second.q[:n, :n]
    known_patch = second.known[:n]
    if not torch.equal(second.q, torch.kron(torch.eye(c, dtype=torch.float64), q_patch)) or not torch.equal(
        second.known, known_patch.repeat(c)
    ):
        raise ValueError("the patch operator must treat every channel the same way to be composed")
    composed = PatchOperator(
        torch.kron(first.q, q_patch),
        (first.known[:, None] & known_patch[None, :]).reshape(-1),
        patch=p,
        channels=c,
    )
    return composed

