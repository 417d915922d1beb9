"""Top-k singular subspaces and what `healer spectra` reports of two of them, in float64 (pure torch).

Definitions (DESIGN.md section 4): for a reference W_b = U Σ Vᵀ and a checkpoint W_t, the principal angles between
their top-k left (and right) singular subspaces, the relative drift of the top-k singular values, and the split of
‖W_t − W_b‖²_F into the diagonal of C = U_kᵀ ΔW V_k (rescaling), its off-diagonal part (rotation inside the top-k
subspaces) and the rest (outside them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Method = Literal["auto", "exact", "fast"]
DTYPE = torch.float64
FAST_ITERATIONS = 2  # subspace iterations per round, from the reference's vectors
FAST_ROUNDS = 4  # rounds before giving up on the fast method for a matrix (it then falls back to exact)
WELL_CONDITIONED = 1e-4  # σ_q / σ_1 above this: W v / σ is orthonormal to 1e-8 without a QR
FALLBACK_DEG = 0.25  # a fast result whose error estimate exceeds this is recomputed exactly (the contract: 0.5°)


@dataclass(frozen=True)
class TopK:
    """The top singular triplets of a matrix: u (m × q) and v (n × q) orthonormal, s (q,) descending, and the next
    singular value below them when known (it sets the gap that makes the top-k subspace well-posed)."""

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    next_s: float | None = None
    method: str = "exact"
    error_deg: float | None = None  # fast: an estimate of the largest angle between these and the exact subspaces

    def head(self, k: int) -> TopK:
        return TopK(self.u[:, :k], self.s[:k], self.v[:, :k], _next(self.s, k, self.next_s), self.method,
                    self.error_deg)  # fmt: skip


def _next(s: torch.Tensor, k: int, fallback: float | None) -> float | None:
    return float(s[k]) if len(s) > k else fallback


def exact_top(w: torch.Tensor, q: int) -> TopK:
    """The top q singular triplets, exactly: an eigendecomposition of the smaller Gram matrix in float64 (for a
    3584 × 18944 matrix it takes seconds where a full SVD takes tens of seconds), the other side as W v / σ."""
    w = w.to(DTYPE)
    m, n = w.shape
    q = min(q, m, n)
    wide = m <= n
    gram = w @ w.T if wide else w.T @ w
    values, vectors = torch.linalg.eigh(gram)
    values, vectors = values.flip(0), vectors.flip(1)
    s = values.clamp(min=0).sqrt()
    side = vectors[:, :q]
    other = (w.T @ side if wide else w @ side) / s[:q].clamp(min=torch.finfo(DTYPE).tiny)
    if float(s[q - 1]) < WELL_CONDITIONED * float(s[0]):
        other = _orthonormal(other)  # orthonormal up to ε (σ_1/σ_q)², re-orthonormalised where that is not small
    u, v = (side, other) if wide else (other, side)
    return TopK(u, s[:q], v, _next(s, q, None), "exact", None)


def _orthonormal(x: torch.Tensor) -> torch.Tensor:
    """x with orthonormal columns spanning the same space, each column's sign kept."""
    q, r = torch.linalg.qr(x)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return q * signs


def fast_top(w: torch.Tensor, k: int, start: torch.Tensor, iterations: int = FAST_ITERATIONS,
             rounds: int = FAST_ROUNDS) -> TopK:  # fmt: skip
    """The top k singular triplets by subspace iteration from `start` (the reference's top left vectors, a few more
    than k), then Rayleigh-Ritz; `iterations` more at a time, up to `rounds` times, until the error estimate is
    under FALLBACK_DEG. The estimate is Wedin's bound ‖R‖_F / δ, with R = W v − u σ and δ the gap between the k-th
    Ritz value and the next, less that next pair's own residual (a Ritz value is within its residual of a true
    singular value)."""
    w = w.to(DTYPE)
    basis = _orthonormal(start.to(DTYPE))
    result = None
    for _ in range(rounds):
        for _ in range(iterations):
            basis = _orthonormal(w @ (w.T @ basis))
        result = _ritz(w, basis, k)
        if result.error_deg is not None and result.error_deg <= FALLBACK_DEG:
            break
    assert result is not None
    return result


def _ritz(w: torch.Tensor, basis: torch.Tensor, k: int) -> TopK:
    """Rayleigh-Ritz on a basis of the left space, with the error estimate of the top k."""
    left, s, right_t = torch.linalg.svd(basis.T @ w, full_matrices=False)
    u_all, v_all = basis @ left, right_t.T
    norms = torch.linalg.vector_norm(w @ v_all - u_all * s, dim=0)
    next_s, gap = (float(s[k]), float(s[k - 1] - s[k] - norms[k])) if len(s) > k else (None, 0.0)
    bound = float(torch.linalg.vector_norm(norms[:k])) / gap if gap > 0 else math.inf
    error = math.degrees(math.asin(min(1.0, bound)))
    return TopK(u_all[:, :k], s[:k], v_all[:, :k], next_s, "fast", error)


def top_k(w: torch.Tensor, k: int, method: Method = "auto", start: torch.Tensor | None = None) -> TopK:
    """The top-k triplets of W by `method`: exact; fast (falls back to exact when its error estimate exceeds
    FALLBACK_DEG); auto = fast on a GPU when warm vectors are given and k is small against the rank, else exact."""
    rank = min(w.shape)
    k = min(k, rank)
    if method == "auto":  # measured on CPU: the Gram eigendecomposition beat the iteration at every size tried
        fast = w.is_cuda and start is not None and start.shape[1] * 4 <= rank
        method = "fast" if fast else "exact"
    if method == "fast" and start is not None and start.shape[1] > k:
        result = fast_top(w, k, start)
        if result.error_deg is not None and result.error_deg <= FALLBACK_DEG:
            return result
        exact = exact_top(w, k + 1)
        return TopK(exact.u[:, :k], exact.s[:k], exact.v[:, :k], float(exact.s[k]) if len(exact.s) > k else None,
                    "exact (fast fell back)", result.error_deg)  # fmt: skip
    return exact_top(w, k + 1).head(k)


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the spans of two orthonormal bases with the same column count,
    accurate for small angles too: arcsin of the sines where the cosine is near 1, arccos elsewhere (as scipy)."""
    a, b = a.to(DTYPE), b.to(DTYPE)
    if a.shape[1] >= a.shape[0]:  # two bases of the whole space: every angle is 0 by dimension
        return torch.zeros(a.shape[1], dtype=DTYPE, device=a.device)
    cross = a.T @ b
    residual = b - a @ cross  # its singular values are the sines
    # squared singular values as eigenvalues of the small Gram matrices (float64: the squares lose nothing that
    # matters above 1e-8 rad, and cost half an SVD)
    cos2 = torch.linalg.eigvalsh(cross.T @ cross).flip(0).clamp(0.0, 1.0)  # descending: the angles ascending
    sin2 = torch.linalg.eigvalsh(residual.T @ residual).clamp(0.0, 1.0)  # ascending: paired with the cosines
    return torch.where(cos2 >= 0.5, torch.arcsin(sin2.sqrt()), torch.arccos(cos2.sqrt()))


def forced_zero(k: int, n: int) -> int:
    """Two k-dimensional subspaces of an n-dimensional space share at least 2k − n dimensions: that many angles are
    0 by dimension, not by training."""
    return max(0, 2 * k - n)


@dataclass(frozen=True)
class SideReading:
    """One side (u or v) of one matrix."""

    k: int
    n: int  # the dimension of the space the subspaces live in
    angles: torch.Tensor  # radians, ascending
    forced_zero: int

    def summary(self) -> dict[str, float]:
        degrees = torch.rad2deg(self.angles)
        chordal = float(torch.linalg.vector_norm(torch.sin(self.angles)))
        return {"mean_angle_deg": float(degrees.mean()), "median_angle_deg": float(degrees.median()),
                "max_angle_deg": float(degrees.max()), "chordal": chordal,
                "chordal_norm": chordal / math.sqrt(self.k)}  # fmt: skip


@dataclass(frozen=True)
class MatrixReading:
    """Everything `healer spectra` reports of one weight matrix against its reference."""

    k: int
    u: SideReading
    v: SideReading
    sigma_drift: torch.Tensor  # (σ_t,i − σ_b,i) / σ_b,i for i ≤ k
    energy_diag: float | None  # shares of ‖ΔW‖²_F; None when W_t = W_b
    energy_rotation: float | None
    energy_outside: float | None
    gap_rel: float | None  # (σ_k − σ_k+1) / σ_k of the checkpoint: near 0, the top-k subspace itself is ill-posed
    method: str
    error_deg: float | None

    @property
    def sigma_rel_drift(self) -> float:
        return float(self.sigma_drift.abs().mean())


def compare(ref: TopK, w_b: torch.Tensor, w_t: torch.Tensor, k: int, method: Method = "auto") -> MatrixReading:
    """Read a checkpoint's matrix W_t against the reference's W_b, whose top triplets `ref` holds (k of them or more;
    the extra ones warm-start the fast method)."""
    m, n = w_t.shape
    k = min(k, m, n, ref.u.shape[1])
    top = top_k(w_t, k, method, start=ref.u if ref.u.shape[1] > k else None)
    base = ref.head(k)
    u = SideReading(k, m, principal_angles(base.u, top.u), forced_zero(k, m))
    v = SideReading(k, n, principal_angles(base.v, top.v), forced_zero(k, n))
    sb = base.s
    drift = torch.where(sb > 0, (top.s - sb) / sb.clamp(min=torch.finfo(DTYPE).tiny), torch.zeros_like(sb))
    delta = w_t.to(DTYPE) - w_b.to(DTYPE)
    total = float(delta.pow(2).sum())
    shares: tuple[float | None, float | None, float | None] = (None, None, None)
    if total > 0:
        c = base.u.T @ delta @ base.v
        diag = float(torch.diagonal(c).pow(2).sum())
        inside = float(c.pow(2).sum())
        shares = (diag / total, (inside - diag) / total, max(0.0, total - inside) / total)
    gap = None
    if top.next_s is not None and float(top.s[k - 1]) > 0:
        gap = (float(top.s[k - 1]) - top.next_s) / float(top.s[k - 1])
    return MatrixReading(k, u, v, drift, *shares, gap, top.method, top.error_deg)
