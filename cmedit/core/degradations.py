"""Real degradations as linear operators: PIL's antialiased downsampling and blur kernels.

- :class:`Downsample` is exactly PIL's ``Image.resize`` shrinking by an integer ``factor`` with its
  bicubic, bilinear, Lanczos or box filter (antialiased; the filter stretched by ``factor``, as MATLAB's
  ``imresize``). PIL resamples separably, so ``A x = R x C^T`` with 1-D matrices read off PIL itself
  (the float-mode resize of an identity image).
- :class:`Blur` is ``scipy.ndimage.convolve(x, kernel, mode="reflect")`` per channel. A rank-1
  (separable) kernel gives 1-D matrices as above; any other kernel an explicit matrix and its SVD for
  images of up to ``DENSE_LIMIT`` pixels, and beyond that the matrix-free form (:class:`ReflectConvolution`
  and conjugate gradients, ``cmedit.core.linear._MatrixFreeParts``).
- :class:`Chain` applies separable operators one after another (blur, then downsample).

All act on ``(B, C, H, W)`` tensors, every channel alike (``cmedit.core.linear``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .linear import DEFAULT_RCOND, LinearOperator, _DenseParts, _MatrixFreeParts, _SeparableParts

# Singular values of a blur below this fraction of the largest are not inverted (the operator's
# numerical rank): far below 8-bit quantisation; cf. DDRM's cut-off for its deblurring operators.
BLUR_RCOND = 1e-2
# Non-separable kernels use an explicit (H W, H W) matrix and its SVD up to this many pixels (64 x 64),
# and the matrix-free form (convolutions and conjugate gradients) beyond.
DENSE_LIMIT = 64 * 64

PIL_FILTERS = ("bicubic", "bilinear", "lanczos", "box")


def pil_resize_matrix(n: int, m: int, kernel: str) -> np.ndarray:
    """The ``(m, n)`` matrix of PIL's 1-D resize of ``n`` samples to ``m`` with ``kernel`` (float64)."""
    from PIL import Image

    if kernel not in PIL_FILTERS:
        raise ValueError(f"kernel must be one of {', '.join(PIL_FILTERS)}, got {kernel!r}")
    resample = getattr(Image.Resampling, kernel.upper())
    eye = Image.fromarray(np.eye(n, dtype=np.float32), mode="F")  # row i is the unit signal e_i
    out = np.asarray(eye.resize((m, n), resample), dtype=np.float64)  # row i is M e_i
    return out.T.copy()


class ReflectConvolution:
    """``scipy.ndimage.convolve(x, kernel, mode="reflect")`` per channel of ``(B, C, H, W)`` tensors, and its adjoint.

    ``A = S K E``: ``E`` extends the image by reflection to ``(H + kh - 1, W + kw - 1)`` (a gather), ``K``
    convolves it with the kernel, ``S`` keeps the ``(H, W)`` window that needs no value beyond the
    extension. ``K`` is computed by FFT: on a grid at least as large as the extended image the circular
    convolution equals the linear one inside that window, so ``A`` is scipy's to rounding (1e-15) in ``O(HW log HW)``. The
    adjoint is ``E^T K^T S^T``: the window zero-padded, correlated with the kernel (the conjugate
    spectrum; no wrap-around reaches the window's support), then the reflected margins added back
    onto the pixels they copy. Nothing larger than the FFT's grid is built.
    """

    def __init__(self, kernel: np.ndarray, size: tuple[int, int]) -> None:
        from scipy.fft import next_fast_len

        (kh, kw), (h, w) = kernel.shape, size
        # convolve's output pixel i is sum_j k[j] x[i + K // 2 - j]: the extension reaches K - 1 - K // 2
        # before the image and K // 2 after it (at most the image's size: the kernel is not larger).
        self.pads = ((kh - 1 - kh // 2, kh // 2), (kw - 1 - kw // 2, kw // 2))
        self.extended = (h + kh - 1, w + kw - 1)
        # The FFT's grid: at least the extended image (a larger one adds zeros, never wrap-around into the
        # window), of a size with small prime factors.
        self.grid = tuple(next_fast_len(n, real=True) for n in self.extended)
        self.kernel, self.size = kernel, (h, w)
        self._cache: dict = {}

    def _spectrum(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._cache:
            with torch.inference_mode(False):
                padded = np.zeros(self.grid)
                padded[:self.kernel.shape[0], :self.kernel.shape[1]] = self.kernel
                self._cache[key] = torch.fft.rfft2(torch.from_numpy(padded).to(like.device, like.dtype))
        return self._cache[key]

    def _extend(self, x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
        """``E`` along ``dim`` (``before, after <= n``: one reflection, ``d c b a | a b c d | d c b a``)."""
        n = x.shape[dim]
        return torch.cat([x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, n - after, after).flip(dim)], dim)

    def _fold(self, e: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
        """``E^T`` along ``dim``: the reflected margins added back onto the pixels they copy."""
        n = e.shape[dim] - before - after
        x = e.narrow(dim, before, n).clone()
        x.narrow(dim, 0, before).add_(e.narrow(dim, 0, before).flip(dim))
        x.narrow(dim, n - after, after).add_(e.narrow(dim, before + n, after).flip(dim))
        return x

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = self._spectrum(x)
        (kh, kw), (h, w) = self.kernel.shape, self.size
        extended = self._extend(self._extend(x, -2, *self.pads[0]), -1, *self.pads[1])
        full = torch.fft.irfft2(torch.fft.rfft2(extended, s=self.grid) * spectrum, s=self.grid)
        return full[..., kh - 1:kh - 1 + h, kw - 1:kw - 1 + w]

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:
        spectrum = self._spectrum(m)
        kh, kw = self.kernel.shape
        window = torch.nn.functional.pad(m, (kw - 1, 0, kh - 1, 0))
        spread = torch.fft.irfft2(torch.fft.rfft2(window, s=self.grid) * spectrum.conj(), s=self.grid)
        spread = spread[..., :self.extended[0], :self.extended[1]]
        return self._fold(self._fold(spread, -2, *self.pads[0]), -1, *self.pads[1])


def convolution_matrix(n: int, kernel_1d: np.ndarray) -> np.ndarray:
    """The ``(n, n)`` matrix of ``scipy.ndimage.convolve1d(x, kernel_1d, mode="reflect")``."""
    from scipy.ndimage import convolve1d

    return convolve1d(np.eye(n), np.asarray(kernel_1d, dtype=np.float64), axis=0, mode="reflect")


class SeparableFamily(LinearOperator):
    """A size-agnostic separable operator: 1-D matrices built for each image size it meets."""

    def matrices(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(R, C)`` with ``A x = R x C^T`` for images of ``size`` ``(H, W)``."""
        raise NotImplementedError

    def _build(self, size):
        rows, cols = self.matrices(size)
        return _SeparableParts(torch.from_numpy(rows), torch.from_numpy(cols), self.rcond)

    def __rshift__(self, other: "SeparableFamily") -> "Chain":
        """``blur >> downsample``: apply ``self`` first, then ``other``."""
        return Chain(self, other)


class Downsample(SeparableFamily):
    """Shrink by an integer ``factor`` exactly as PIL's ``Image.resize`` does with ``kernel``.

    ``A``: images ``(H, W)`` (multiples of ``factor``) to ``(H / factor, W / factor)``. ``kernel="box"``
    is the block mean of :class:`~cmedit.core.operators.SuperResolution`.
    """

    def __init__(self, factor: int, kernel: str = "bicubic", rcond: float = DEFAULT_RCOND) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        if kernel not in PIL_FILTERS:
            raise ValueError(f"kernel must be one of {', '.join(PIL_FILTERS)}, got {kernel!r}")
        self.factor, self.kernel, self.rcond = int(factor), kernel, rcond
        # A^+ y along a measured direction has noise factor * sigma_y and a spread factor times a pixel's
        # (it spans factor^2 correlated pixels, with singular value ~1 / factor): eta scales by 1 / factor^2.
        self.noise_gain = 1 / self.factor

    def measurement_size(self, size):
        h, w = size
        if h % self.factor or w % self.factor:
            raise ValueError(f"factor {self.factor} does not divide image size {w}x{h}")
        return h // self.factor, w // self.factor

    def image_size(self, size):
        return size[0] * self.factor, size[1] * self.factor

    def matrices(self, size):
        h, w = self.measurement_size(size)
        return pil_resize_matrix(size[0], h, self.kernel), pil_resize_matrix(size[1], w, self.kernel)

    def __repr__(self) -> str:
        return f"Downsample({self.factor}, kernel={self.kernel!r})"


def normalise_kernel(kernel) -> np.ndarray:
    """A 2-D float64 kernel scaled to sum 1; ``ValueError`` unless it is 2-D, finite and sums to > 0."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim == 1:
        kernel = kernel[None, :]
    if kernel.ndim != 2 or kernel.size == 0:
        raise ValueError(f"a blur kernel must be a 2-D array, got shape {kernel.shape}")
    if not np.isfinite(kernel).all():
        raise ValueError("the blur kernel holds non-finite values")
    total = kernel.sum()
    if not total > 1e-12:
        raise ValueError(f"the blur kernel must sum to a positive number, got {total:g}")
    return kernel / total


def load_kernel(path: str | Path) -> np.ndarray:
    """A kernel from a ``.npy`` file or a greyscale image file (normalised to sum 1)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            return normalise_kernel(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a usable kernel ({error})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return normalise_kernel(np.asarray(image.convert("F"), dtype=np.float64))
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: not a readable kernel image ({error})") from None


def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """``(size, size)`` Gaussian of standard deviation ``sigma`` pixels; ``size`` default ``2 ceil(3 sigma) + 1``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else int(size)
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return normalise_kernel(np.outer(g, g))


def box_kernel(size: int) -> np.ndarray:
    """``(size, size)`` uniform kernel."""
    if size < 1:
        raise ValueError(f"box size must be >= 1, got {size}")
    return np.full((size, size), 1.0 / size**2)


def motion_kernel(length: float, angle: float = 0.0) -> np.ndarray:
    """A straight motion of ``length`` pixels through the centre at ``angle`` degrees (anticlockwise from x).

    The segment is sampled finely and each sample spread over its four nearest pixels (bilinear).
    """
    if not length >= 1:
        raise ValueError(f"motion length must be >= 1 pixel, got {length}")
    size = int(math.ceil(length)) | 1  # odd, so the kernel has a centre pixel
    kernel = np.zeros((size + 1, size + 1))
    c = (size - 1) / 2
    theta = math.radians(angle)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * size + 1):
        x, y = c + t * math.cos(theta), c - t * math.sin(theta)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    return normalise_kernel(kernel[:size, :size])


def separable_factors(kernel: np.ndarray, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray] | None:
    """``(u, v)`` with ``kernel = outer(u, v)`` if the kernel has rank 1 (to ``tol``), else None."""
    u, s, vh = np.linalg.svd(kernel)
    if len(s) > 1 and s[1] > tol * s[0]:
        return None
    return u[:, 0] * math.sqrt(s[0]), vh[0] * math.sqrt(s[0])


class Blur(LinearOperator):
    """Convolution with a 2-D ``kernel`` per channel, boundary as ``scipy.ndimage.convolve(mode="reflect")``.

    ``kernel``: an array (any 2-D shape), or the path of a ``.npy`` or greyscale image file; it is
    normalised to sum 1. ``A`` keeps the image size. Rank-1 kernels (Gaussian, box) are separable;
    others use an explicit matrix for images of at most ``dense_limit`` pixels and are matrix-free beyond.
    """

    dense_limit: int = DENSE_LIMIT  # non-separable kernels: the explicit matrix up to this many pixels

    def __init__(self, kernel, rcond: float = BLUR_RCOND) -> None:
        self.kernel = load_kernel(kernel) if isinstance(kernel, (str, Path)) else normalise_kernel(kernel)
        self.factors = separable_factors(self.kernel)
        self.rcond = rcond
        self.default_sigmas = (0.26, 0.09)  # a blur's (LinearOperator.default_sigmas): measured

    @property
    def separable(self) -> bool:
        return self.factors is not None

    def check_kernel(self, size: tuple[int, int]) -> None:
        """``ValueError`` if the kernel is larger than images of ``size`` ``(H, W)``."""
        kh, kw = self.kernel.shape
        if kh > size[0] or kw > size[1]:
            raise ValueError(f"the blur kernel ({kw}x{kh}) is larger than the image ({size[1]}x{size[0]})")

    def measurement_size(self, size):
        self.check_kernel(size)
        return tuple(size)

    def image_size(self, size):
        return tuple(size)

    def matrices(self, size):
        self.measurement_size(size)
        u, v = self.factors
        return convolution_matrix(size[0], u), convolution_matrix(size[1], v)

    def dense_matrix(self, size) -> np.ndarray:
        """``(H W, H W)``: column ``j`` is the blur of the unit image ``e_j``."""
        from scipy.ndimage import convolve

        h, w = size
        units = np.eye(h * w).reshape(h * w, h, w)
        return convolve(units, self.kernel[None], mode="reflect").reshape(h * w, h * w).T

    def _build(self, size):
        self.measurement_size(size)
        if self.separable:
            rows, cols = self.matrices(size)
            return _SeparableParts(torch.from_numpy(rows), torch.from_numpy(cols), self.rcond)
        if size[0] * size[1] <= self.dense_limit:
            return _DenseParts(torch.from_numpy(self.dense_matrix(size)), tuple(size), tuple(size), self.rcond)
        return self.matrix_free_parts(size)

    def matrix_free_parts(self, size) -> _MatrixFreeParts:
        """The matrix-free form for images of ``size``: ``A`` and ``A^T`` by convolution (FFT), ``A^+_eta``
        by conjugate gradients on the normal equations.

        ``s_max = 1`` for the cut-off: ``A`` maps a constant image to itself, and the border's reflections
        raise the largest singular value of a normalised non-negative kernel only a little (motion blurs
        of 5 to 15 pixels at 64x64: 1.00 to 1.03 by the dense SVD).
        """
        convolution = ReflectConvolution(self.kernel, tuple(size))
        return _MatrixFreeParts(convolution.apply, convolution.adjoint, 1.0, self.rcond)

    def __rshift__(self, other: "SeparableFamily") -> "Chain":
        return Chain(self, other)

    def __repr__(self) -> str:
        return f"Blur({self.kernel.shape[1]}x{self.kernel.shape[0]} kernel)"


def GaussianBlur(sigma: float, size: int | None = None, rcond: float = BLUR_RCOND) -> Blur:  # noqa: N802
    """:class:`Blur` with a Gaussian kernel of ``sigma`` pixels (``size``: default ``2 ceil(3 sigma) + 1``)."""
    return Blur(gaussian_kernel(sigma, size), rcond=rcond)


def BoxBlur(size: int, rcond: float = BLUR_RCOND) -> Blur:  # noqa: N802
    """:class:`Blur` with a ``size x size`` uniform kernel."""
    return Blur(box_kernel(size), rcond=rcond)


def MotionBlur(length: float, angle: float = 0.0, rcond: float = BLUR_RCOND) -> Blur:  # noqa: N802
    """:class:`Blur` with a straight motion of ``length`` pixels at ``angle`` degrees."""
    return Blur(motion_kernel(length, angle), rcond=rcond)


class Chain(SeparableFamily):
    """Separable operators applied in turn: ``A = A_2 A_1`` (e.g. a Gaussian blur, then a downsample)."""

    def __init__(self, first, second, rcond: float | None = None) -> None:
        for op in (first, second):
            if not hasattr(op, "matrices") or (isinstance(op, Blur) and not op.separable):
                raise ValueError("only separable operators (Downsample, Gaussian or box blur) can be chained")
        self.first, self.second = first, second
        self.rcond = max(first.rcond, second.rcond) if rcond is None else rcond
        self.noise_gain = first.noise_gain * second.noise_gain
        self.default_sigmas = max(first.default_sigmas, second.default_sigmas)  # the harder part's schedule

    def measurement_size(self, size):
        return self.second.measurement_size(self.first.measurement_size(size))

    def image_size(self, size):
        return self.first.image_size(self.second.image_size(size))

    def matrices(self, size):
        r1, c1 = self.first.matrices(size)
        r2, c2 = self.second.matrices(self.first.measurement_size(size))
        return r2 @ r1, c2 @ c1
