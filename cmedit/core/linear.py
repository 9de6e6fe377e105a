"""General linear operators ``y = A x (+ noise)`` beside the orthogonal ones (design.md, degradations).

An orthogonal :class:`~cmedit.core.operators.Operator` knows some components of ``A x`` exactly and
generates the rest. A :class:`LinearOperator` is any linear map from pixels ``(B, C, H, W)`` to
measurements ``(B, C, h, w)`` that acts on every channel the same way (a resize, a blur, both). It
is given by its SVD ``A = U S V^T`` per channel, from which come

- the regularised pseudo-inverse ``A^+_eta y = V S / (S^2 + eta) U^T y = (A^T A + eta I)^-1 A^T y``
  (``eta = 0``: the Moore-Penrose pseudo-inverse ``A^+``), and
- the range-null-space projection ``P(x) = x + A^+(y - A x)`` (DDNM, Wang et al. 2023), with
  ``A^+ A = V V^T`` the projector onto the row space; for an orthogonal operator it is Algorithm 4's
  ``P``.

Singular values below ``rcond`` times the largest are treated as zero (the operator's numerical rank):
a blur's smallest singular values are far below 8-bit quantisation, and inverting them would only
amplify it. ``A A^+ A = A`` then holds to within ``rcond`` (exactly for well-conditioned operators).

A measurement is carried in pixel space as ``y0 = A^+ y``: then ``A y0 = y`` (on the kept singular
directions) and the sampler's ``project(x, y0)`` has the same signature as the orthogonal operators'.

Three forms are implemented: :class:`SeparableOperator` (``A x = R x C^T`` per channel, the SVDs of
the two 1-D matrices give the 2-D one: a few small matrix products per step) and
:class:`DenseOperator` (an explicit ``(h w, H W)`` matrix; for non-separable blur kernels at the
model's resolution) are exact; ``_MatrixFreeParts`` (non-separable blurs at any larger size) has only
``A`` and ``A^T`` and solves ``(A^T A + eta I) u = A^T m`` by conjugate gradients, with Tikhonov
regularisation at the cut-off in place of the truncation (exact to the solver's tolerance).
"""

from __future__ import annotations

from typing import Callable

import torch

from .operators import Operator

DEFAULT_RCOND = 1e-6
FIT_ITERATIONS = 100  # alternating projections of fit_range (cheap: a few small products each)
# Conjugate gradients of the matrix-free form (_MatrixFreeParts): stop when the residual of the normal
# equations is below CG_TOLERANCE of the measurement's A^T y, or after CG_ITERATIONS (measured at 64x64
# against the dense SVD: BENCHMARKS.md, real degradations).
CG_TOLERANCE = 1e-5
CG_ITERATIONS = 300
# Alternating projections of fit_measurement in the matrix-free form: each is a conjugate-gradient solve
# at full size (seconds at 512x512), so few. Measured on a 512x512 motion blur (9 px, 30 degrees) of an
# out-of-range estimate: max |A x - y| on [-1, 1] clipped only 0.0083 (about one 8-bit level, mean
# 1.5e-4), after 2 projections 0.0050, 5: 0.0032, 21 (converged): 0.00025, at 3.5-14 s a projection.
MATRIX_FREE_FIT_ITERATIONS = 3


def _svd(matrix: torch.Tensor, rcond: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, s, V`` of ``matrix`` in float64 (thin SVD)."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return u, s, vh.T


def spectral_filter(s: torch.Tensor, eta: float, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per singular value: ``s / (s^2 + eta)`` (pseudo-inverse) and ``s^2 / (s^2 + eta)`` (range weight).

    Values at or below ``cutoff`` are treated as zero singular values: both filters are 0 there.
    """
    kept = s > cutoff
    safe = torch.where(kept, s, torch.ones_like(s))
    inverse = torch.where(kept, safe / (safe**2 + eta), torch.zeros_like(s))
    weight = torch.where(kept, safe**2 / (safe**2 + eta), torch.zeros_like(s))
    return inverse, weight


class LinearOperator(Operator):
    """A linear ``A`` from pixels ``(B, C, H, W)`` to measurements ``(B, C, h, w)``, the same per channel.

    Subclasses build, per image size, the SVD parts (:meth:`_build`); everything else is shared.
    ``rcond``: relative cutoff of the singular values (see the module docstring).
    """

    rcond: float = DEFAULT_RCOND
    noise_gain: float = 1.0  # see Operator.noise_gain
    # A restoration's default schedule (``cmedit.restoration``; docs/design.md, section 12): its noise
    # levels run geometrically from the first to the second, starting from A^+_eta y plus noise, and
    # all but ``fresh_noise`` of each step's new noise is the denoiser's own estimate, sign reversed.
    # Chosen by measurement (BENCHMARKS.md, real degradations): these are a super-resolution's.
    default_sigmas: tuple[float, float] = (2.24, 0.18)
    fresh_noise: float = 0.1

    # --------------------------------------------------------------- to implement
    def measurement_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of ``A x`` for images of ``size`` ``(H, W)``."""
        raise NotImplementedError

    def image_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the images whose measurements have ``size`` ``(h, w)``."""
        raise NotImplementedError

    def _build(self, size: tuple[int, int]) -> "_Parts":
        """The SVD parts of ``A`` for images of ``size``."""
        raise NotImplementedError

    # --------------------------------------------------------------- shared
    def parts(self, size: tuple[int, int]) -> "_Parts":
        cache = self.__dict__.setdefault("_parts_cache", {})
        size = (int(size[0]), int(size[1]))
        if size not in cache:
            cache[size] = self._build(size)
        return cache[size]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x.shape[-2:]).apply(x)

    def AT(self, m: torch.Tensor) -> torch.Tensor:
        return self.parts(self.image_size(m.shape[-2:])).adjoint(m)

    def pinv(self, m: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``A^+_eta m = (A^T A + eta I)^-1 A^T m`` (kept singular directions only); ``m`` ``(B, C, h, w)``."""
        return self.parts(self.image_size(m.shape[-2:])).pinv(m, eta)

    def range_part(self, x: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``A^+_eta A x = V [s^2 / (s^2 + eta)] V^T x``; ``eta = 0``: the projection onto the row space."""
        return self.parts(x.shape[-2:]).range_part(x, eta)

    def mask(self, shape, device, dtype):
        raise NotImplementedError("a general linear operator has no mask; use range_part")

    def known_part(self, y: torch.Tensor) -> torch.Tensor:
        """``A^+ A y``: the component of the pixel-space ``y`` that the measurement determines."""
        return self.range_part(y)

    def project(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """``P(x) = x + A^+(y - A x) = y0 + (I - A^+ A) x`` with ``y0 = A^+ y`` (range-null-space form)."""
        return x - self.range_part(x) + y0

    def project_noisy(self, x: torch.Tensor, y0: torch.Tensor, eta: float) -> torch.Tensor:
        """``x + A^+_eta (y - A x)``: the regularised back-projection for a noisy ``y`` (``y0 = A^+ y``)."""
        return x + self.range_part(y0 - x, eta)

    def fit_range(self, x: torch.Tensor, y: torch.Tensor, iterations: int = FIT_ITERATIONS) -> torch.Tensor:
        """Bring a projected ``x`` into ``[-1, 1]`` keeping ``A x`` (``y``: the pixel reference, ``A^+`` of the measurement).

        Alternating projections (POCS) onto the box ``[-1, 1]`` and the affine set ``{A x = A y}``, both
        convex: they approach a point of the intersection when one exists. The result is clipped last,
        so it is in range and consistent to within what the iterations reached.
        """
        y0 = self.known_part(y)
        for _ in range(iterations):
            clipped = x.clamp(-1, 1)
            if torch.equal(clipped, x):
                break
            x = self.project(clipped, y0)
        return x.clamp(-1, 1)

    def back_project(self, x: torch.Tensor, y: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        """``x + A^+_eta (y - A x)`` for the measurement ``y`` itself ``(B, C, h, w)``: :meth:`project`
        (``eta = 0``) or :meth:`project_noisy` with ``y0 = A^+ y``; the matrix-free form solves for the
        correction directly (``_MatrixFreeParts``)."""
        parts = self.parts(x.shape[-2:])
        if isinstance(parts, _MatrixFreeParts):
            return parts.back_project(x, y, eta)
        reference = self.pinv(y)
        return self.project_noisy(x, reference, eta) if eta else self.project(x, reference)

    def fit_measurement(self, x: torch.Tensor, y: torch.Tensor, iterations: int = FIT_ITERATIONS) -> torch.Tensor:
        """:meth:`fit_range` for the measurement ``y`` itself: alternating projections onto ``[-1, 1]`` and
        ``{A x = y}`` (the matrix-free form: each a :meth:`back_project` at full size, at most
        ``MATRIX_FREE_FIT_ITERATIONS`` of them), clipped last."""
        if not isinstance(self.parts(x.shape[-2:]), _MatrixFreeParts):
            return self.fit_range(x, self.pinv(y), iterations)
        for _ in range(min(iterations, MATRIX_FREE_FIT_ITERATIONS)):
            clipped = x.clamp(-1, 1)
            if torch.equal(clipped, x):
                break
            x = self.back_project(clipped, y)
        return x.clamp(-1, 1)

    def resized(self, size: tuple[int, int]) -> "Operator":
        raise ValueError(f"{type(self).__name__} acts at the image's own scale: the image must be the model's "
                         "size (super_resolve and deblur tile larger images)")

    def check_shape(self, shape: torch.Size) -> None:
        self.measurement_size(tuple(shape[-2:]))  # raises ValueError for a size it cannot act on


class _Parts:
    """The SVD of ``A`` for one image size, applied per channel to ``(B, C, H, W)`` tensors."""

    def apply(self, x): raise NotImplementedError
    def adjoint(self, m): raise NotImplementedError
    def pinv(self, m, eta): raise NotImplementedError
    def range_part(self, x, eta): raise NotImplementedError


class _SeparableParts(_Parts):
    """``A x = R x C^T`` per channel; ``R = U_r S_r V_r^T``, ``C = U_c S_c V_c^T``, ``s_ij = s_r,i s_c,j``."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, rcond: float) -> None:
        self.rows, self.cols = rows.double(), cols.double()
        self.ur, sr, self.vr = _svd(self.rows, rcond)
        self.uc, sc, self.vc = _svd(self.cols, rcond)
        self.s = sr[:, None] * sc[None, :]
        self.cutoff = rcond * float(self.s.max())
        self._cache: dict = {}

    def _get(self, name: str, like: torch.Tensor, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            with torch.inference_mode(False):
                self._cache[key] = make().to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _filters(self, eta: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inverse = self._get(f"inv{eta!r}", like, lambda: spectral_filter(self.s, eta, self.cutoff)[0])
        weight = self._get(f"w{eta!r}", like, lambda: spectral_filter(self.s, eta, self.cutoff)[1])
        return inverse, weight

    def apply(self, x):
        return self._get("R", x, lambda: self.rows) @ x @ self._get("C", x, lambda: self.cols).T

    def adjoint(self, m):
        return self._get("R", m, lambda: self.rows).T @ m @ self._get("C", m, lambda: self.cols)

    def pinv(self, m, eta):
        ur, uc = self._get("ur", m, lambda: self.ur), self._get("uc", m, lambda: self.uc)
        vr, vc = self._get("vr", m, lambda: self.vr), self._get("vc", m, lambda: self.vc)
        inverse, _ = self._filters(eta, m)
        return vr @ ((ur.T @ m @ uc) * inverse) @ vc.T

    def range_part(self, x, eta):
        vr, vc = self._get("vr", x, lambda: self.vr), self._get("vc", x, lambda: self.vc)
        _, weight = self._filters(eta, x)
        return vr @ ((vr.T @ x @ vc) * weight) @ vc.T


class _DenseParts(_Parts):
    """``A`` as an explicit ``(h w, H W)`` matrix per channel; the projectors precomputed per ``eta``."""

    def __init__(self, matrix: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int],
                 rcond: float) -> None:
        self.matrix = matrix.double()
        self.in_size, self.out_size = in_size, out_size
        self.u, self.s, self.v = _svd(self.matrix, rcond)
        self.cutoff = rcond * float(self.s.max())
        self._cache: dict = {}

    def _get(self, name, like, make):
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            with torch.inference_mode(False):
                self._cache[key] = make().to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _pinv_matrix(self, eta):
        inverse, _ = spectral_filter(self.s, eta, self.cutoff)
        return (self.v * inverse) @ self.u.T

    def _range_matrix(self, eta):
        _, weight = spectral_filter(self.s, eta, self.cutoff)
        return (self.v * weight) @ self.v.T

    def _map(self, matrix, x, out_size):
        return (x.flatten(-2) @ matrix.T).unflatten(-1, out_size)

    def apply(self, x):
        return self._map(self._get("A", x, lambda: self.matrix), x, self.out_size)

    def adjoint(self, m):
        return self._map(self._get("AT", m, lambda: self.matrix.T), m, self.in_size)

    def pinv(self, m, eta):
        return self._map(self._get(f"pinv{eta!r}", m, lambda: self._pinv_matrix(eta)), m, self.in_size)

    def range_part(self, x, eta):
        return self._map(self._get(f"range{eta!r}", x, lambda: self._range_matrix(eta)), x, self.in_size)


class SeparableOperator(LinearOperator):
    """``A x = R x C^T`` per channel for fixed 1-D matrices ``R`` ``(h, H)`` and ``C`` ``(w, W)``."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, rcond: float = DEFAULT_RCOND) -> None:
        self.rows, self.cols, self.rcond = torch.as_tensor(rows), torch.as_tensor(cols), rcond

    def measurement_size(self, size):
        if tuple(size) != (self.rows.shape[1], self.cols.shape[1]):
            raise ValueError(f"operator acts on {self.cols.shape[1]}x{self.rows.shape[1]} images, got "
                             f"{size[1]}x{size[0]}")
        return self.rows.shape[0], self.cols.shape[0]

    def image_size(self, size):
        return self.rows.shape[1], self.cols.shape[1]

    def _build(self, size):
        self.measurement_size(size)
        return _SeparableParts(self.rows, self.cols, self.rcond)


class DenseOperator(LinearOperator):
    """``A`` per channel as an explicit matrix ``(h w, H W)`` acting on images of ``size`` ``(H, W)``."""

    def __init__(self, matrix: torch.Tensor, size: tuple[int, int], out_size: tuple[int, int],
                 rcond: float = DEFAULT_RCOND) -> None:
        self.matrix, self.size, self.out_size, self.rcond = torch.as_tensor(matrix), tuple(size), tuple(out_size), rcond

    def measurement_size(self, size):
        if tuple(size) != self.size:
            raise ValueError(f"operator acts on {self.size[1]}x{self.size[0]} images, got {size[1]}x{size[0]}")
        return self.out_size

    def image_size(self, size):
        return self.size

    def _build(self, size):
        self.measurement_size(size)
        return _DenseParts(self.matrix, self.size, self.out_size, self.rcond)


def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       tolerance: float = CG_TOLERANCE, iterations: int = CG_ITERATIONS,
                       scale: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Solve ``normal(u) = rhs`` for a symmetric positive definite ``normal``, every ``(B, C)`` image on its own.

    Conjugate gradients (Hestenes & Stiefel 1952) from ``u = 0``, one step length per image: the
    images' systems are independent. Stops when every image's residual is at most ``tolerance`` times
    its ``scale`` (default: the norm of its ``rhs``; a correction's solve passes the norm of the whole
    measurement's, so that a small correction needs few iterations), or after ``iterations``.
    Returns ``u`` and the iterations run.
    """
    dims = (-2, -1)
    u = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum(dims, keepdim=True)
    goal = tolerance * (rhs.norm(dim=dims, keepdim=True) if scale is None else scale)
    for done in range(iterations):
        if bool((rr.sqrt() <= goal).all()):
            return u, done
        q = normal(p)
        pq = (p * q).sum(dims, keepdim=True)
        alpha = torch.where(rr > 0, rr / torch.where(rr > 0, pq, torch.ones_like(pq)), torch.zeros_like(pq))
        u = u + alpha * p
        r = r - alpha * q
        rr_new = (r * r).sum(dims, keepdim=True)
        p = r + torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr)) * p
        rr = rr_new
    return u, iterations


class _MatrixFreeParts(_Parts):
    """``A`` given only by ``apply`` and ``adjoint``; ``A^+_eta`` by conjugate gradients on the normal equations.

    ``A^+_eta m = (A^T A + eta I)^-1 A^T m`` is solved by :func:`conjugate_gradient` with
    ``eta >= eta_min = (rcond s_max)^2``: for ``eta = 0`` Tikhonov regularisation at the cut-off takes
    the place of the SVD forms' truncation. Along a singular direction ``s`` those keep ``1 / s`` above
    ``rcond s_max`` and 0 below; this keeps ``s / (s^2 + eta_min)``: within 1% of ``1 / s`` from
    ``10 rcond s_max`` up, at most ``1 / (2 sqrt(eta_min))`` near the cut-off, and ``A A^+ A = A`` to
    within ``rcond s_max / 2`` (the truncation's: ``rcond s_max``). For ``eta > eta_min`` the two differ
    only below the cut-off, where ``s^2 / (s^2 + eta) < eta_min / eta``.
    """

    def __init__(self, apply: Callable, adjoint: Callable, s_max: float, rcond: float,
                 tolerance: float = CG_TOLERANCE, iterations: int = CG_ITERATIONS) -> None:
        self._apply, self._adjoint = apply, adjoint
        self.eta_min = (rcond * s_max) ** 2
        self.tolerance, self.iterations = tolerance, iterations
        self.last_iterations = 0  # of the last solve (for measurements)

    def apply(self, x):
        return self._apply(x)

    def adjoint(self, m):
        return self._adjoint(m)

    def solve(self, rhs: torch.Tensor, eta: float, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``(A^T A + max(eta, eta_min) I)^-1 rhs`` (``scale``: see :func:`conjugate_gradient`)."""
        eta = max(float(eta), self.eta_min)
        u, self.last_iterations = conjugate_gradient(lambda v: self._adjoint(self._apply(v)) + eta * v, rhs,
                                                     self.tolerance, self.iterations, scale)
        return u

    def pinv(self, m, eta):
        return self.solve(self._adjoint(m), eta)

    def range_part(self, x, eta):
        return self.pinv(self._apply(x), eta)

    def back_project(self, x, y, eta):
        """``x + A^+_eta (y - A x)``, solved for the correction (to the tolerance of the whole measurement)."""
        scale = self._adjoint(y).norm(dim=(-2, -1), keepdim=True)
        return x + self.solve(self._adjoint(y - self._apply(x)), eta, scale)
