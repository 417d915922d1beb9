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
FAST_STEPS = 8  # Rayleigh-Ritz steps, alternating sides, at most, before the fast method gives up on a matrix (then
# exact); it gives up sooner when the bound's rate of fall says the steps left cannot get there (`_converging`)
WELL_CONDITIONED = 1e-4  # σ_q / σ_1 above this: W v / σ is orthonormal to 1e-8 without a QR
FALLBACK_DEG = 0.5  # the contract: every angle within 0.5° of an exact SVD's; a fast result whose bound exceeds
# it is recomputed exactly. The bound is rigorous but for float32 rounding terms, and measured at a median 22 to 56
# times the true error on SmolLM2 (benchmarks/spectra.py prints both).
FAST_SHARE = 0.6  # auto takes the fast method while the block (k and its margin) is at most this share of the rank
U32 = 2.0**-24  # float32's unit roundoff
ANGLES_DEG = 1e-4  # what float32 products move a principal angle by (1e-6 rad, measured 1e-7), added to fast's bound


@dataclass(frozen=True)
class TopK:
    """The top singular triplets of a matrix: u (m × q) and v (n × q) orthonormal, s (q,) descending, and the next
    singular value below them when known (it sets the gap that makes the top-k subspace well-posed)."""

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    next_s: float | None = None
    method: str = "exact"
    error_deg: float | None = None  # fast: a bound on the largest angle between these and the exact subspaces

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


def fast_top(w: torch.Tensor, k: int, ref: TopK, shift: float, steps: int = FAST_STEPS,
             target_deg: float = FALLBACK_DEG, norm: float | None = None,
             moved_block: torch.Tensor | None = None) -> TopK:  # fmt: skip
    """The top k singular triplets of W = W_b + ΔW by block Rayleigh-Ritz from the reference's top K > k vectors,
    with a rigorous bound on the error of the subspaces; float32 products, float64 small matrices.

    Step j holds an orthonormal basis X of K vectors on one side (the reference's, on the longer side, at first), forms
    P = W X (or Wᵀ X), and takes the Ritz pairs of the Gram matrix G on span(X) from PᵀP: vectors X Y, values θ.
    The other side O = P Y / √θ is orthonormal and spans W·span(X): the next step's basis, one power step on.
    The product the residual needs, R = G X Y − X Y Θ = (Wᵀ O − X Y √θ) √θ, is the next step's P, so each step
    costs one product with W. The bound, for a guard K' between k and K chosen to make it smallest:

        sin ∠(top-k Ritz, true top-k) ≤ √(1 + γ₂²/δ_k²) · γ / (θ_k − μ)        (Knyazev 1997; Davis-Kahan)

    with γ = ‖R[:, :K']‖₂, γ₂ = ‖R[:, k:K']‖₂ (the unwanted Ritz vectors' part: in Knyazev's proof only they couple
    through the Sylvester equation), δ_k = θ_k − θ_k+1 (a lower bound on the gap by Cauchy's interlacing), and μ an
    upper bound on G over the complement of the first K' Ritz vectors: that complement couples the remaining Ritz
    values (≤ θ_K'+1) through ‖R[:, K':]‖₂ to the complement of span(X), where G is at most (σ_K+1(W_b) + ‖ΔW‖_F)²
    (Weyl; the complement of W·span(X) is mapped by Wᵀ into the complement of span(X), so this holds at every step).
    The bound covers the other side too: W maps a subspace within angle ε of the top-k right vectors to one within
    tan ε · σ_k+1/σ_k of the top-k left ones. A probabilistic float32 rounding term is added to γ.
    `shift` is ‖ΔW‖_F, `norm` ‖W‖_F or more (computed when not given), `moved_block` ΔW on the reference's block
    (see `moved`; the first product is then U Σ + ΔW V, no product with W). Returns the result with the smallest
    bound, certified or not (the caller falls back)."""
    w = w.float()
    m, n = w.shape
    big = ref.u.shape[1]
    if ref.next_s is None or big <= k:
        return _uncertified(ref)
    sigma_1 = float(ref.s[0]) + shift
    # G over the complement of span(X), at every step; the last term: the reference's vectors are kept in float32
    mu_out = (ref.next_s + shift + 4 * U32 * math.sqrt(big) * sigma_1) ** 2
    if (float(ref.s[k - 1]) + shift) ** 2 <= mu_out:  # σ_k(W)² ≤ (σ_k(W_b) + ‖ΔW‖)²: no gap to certify, ever
        return _uncertified(ref)
    w_norm = float(torch.linalg.vector_norm(w)) if norm is None else norm
    on_right = starts_right((m, n))
    basis = (ref.v if on_right else ref.u).float()
    if moved_block is not None:  # W V = W_b V + ΔW V = U Σ + ΔW V (the reference's exact triplets)
        product = (ref.u if on_right else ref.v).float() * ref.s[:big].float() + moved_block
    else:
        product = w @ basis if on_right else w.T @ basis
    best: TopK | None = None
    previous: float | None = None
    for step in range(steps):
        p64 = product.double()
        theta, y = torch.linalg.eigh(p64.T @ p64)
        theta, y = theta.flip(0).clamp(min=0), y.flip(1)
        s = theta.sqrt()
        first, last = s[0].item(), s[-1].item()
        if last <= WELL_CONDITIONED * first:
            break  # a block nearly rank-deficient: O would not be orthonormal
        y32, s32 = y.float(), s.float()
        ritz = basis @ y32
        other = (product @ y32) / s32  # orthonormal to `skew`
        skew = 4 * U32 * math.sqrt(big) * first / last
        product = (w.T if on_right else w) @ other
        residual = (product - ritz * s32) * s32  # float32: its rounding is in `rounding`
        inner = m if on_right else n
        rounding = 2 * U32 * sigma_1 * (math.sqrt(inner) * w_norm + sigma_1 * math.sqrt(big))
        enough = math.sin(math.radians(target_deg)) - skew
        sine = _bound(theta, residual, k, mu_out, rounding, enough) + skew
        u, v = (other, ritz) if on_right else (ritz, other)
        error = math.degrees(math.asin(min(1.0, sine))) + ANGLES_DEG
        if best is None or error < (best.error_deg or math.inf):
            best = TopK(u[:, :k], s[:k], v[:, :k], float(s[k]), "fast", error)
        if error <= target_deg or not _converging(previous, error, target_deg, steps - step - 1):
            break
        previous = error
        basis, on_right = other, not on_right
    if best is None:
        return _uncertified(ref)
    return best


def _converging(previous: float | None, error: float, target: float, left: int) -> bool:
    """Whether the steps `left` can bring the bound from `error` to `target` at the rate it fell by in the last
    step (each step shrinks it by about the same factor); a bound that did not fall is given up on at once, since
    the exact method then costs less than the steps it would waste. Measured on SmolLM2 fine-tuned 60 steps at lr
    1e-4 (k = 64, one core): four steps without this rule 11.2 s (70 matrices fast), with it 10.3 s; eight steps
    with it 10.1 s (112 fast), twelve 10.3 s (121 fast)."""
    if left <= 0:
        return False
    if previous is None:
        return True  # one step taken: no rate yet
    if not error < previous:
        return False  # stalled, or still infinite
    return error * (error / previous) ** left <= target


def _uncertified(ref: TopK) -> TopK:
    """No result: the caller falls back to the exact method."""
    return TopK(ref.u[:, :0], ref.s[:0], ref.v[:, :0], None, "fast", math.inf)


def _bound(theta: torch.Tensor, residual: torch.Tensor, k: int, mu_out: float, rounding: float,
           enough: float = 0.0) -> float:  # fmt: skip
    """The sine bound of `fast_top` at the best guard K': chosen with Frobenius norms (an upper bound on the
    spectral ones, for every K' at once), then evaluated with cheap upper bounds on the spectral norms (Gershgorin's
    and Frobenius's on the residual's Gram matrix) and, where that is not `enough`, with the spectral norms."""
    values = theta.tolist()  # K numbers: plain floats cost less than K-long tensor operations
    big = len(values)
    theta_k, gap_k = values[k - 1], values[k - 1] - values[k]
    if gap_k <= 0 or theta_k <= mu_out:
        return math.inf
    squares = residual.pow(2).sum(0).tolist()
    total = math.fsum(squares)
    wanted2 = math.fsum(squares[:k])
    best, guard, inside2 = math.inf, 0, wanted2
    for candidate in range(k + 1, big + 1):  # the first `candidate` Ritz vectors inside, the rest outside
        inside2 += squares[candidate - 1]
        inside = math.sqrt(inside2) + rounding
        unwanted = math.sqrt(max(0.0, inside2 - wanted2)) + rounding
        outside = math.sqrt(max(0.0, total - inside2)) + rounding
        a = values[candidate] if candidate < big else mu_out
        mu = _coupled(a, mu_out, outside)
        if theta_k > mu:
            bound = math.sqrt(1 + (unwanted / gap_k) ** 2) * inside / (theta_k - mu)
            if bound < best:
                best, guard = bound, candidate
    if not math.isfinite(best):
        return math.inf
    gram = (residual.T @ residual).double()
    bound = math.inf
    for largest in (_at_most, _largest):
        gamma = largest(gram[:guard, :guard]) ** 0.5 + rounding
        unwanted = largest(gram[k:guard, k:guard]) ** 0.5 + rounding
        mu = mu_out
        if guard < big:
            coupling = largest(gram[guard:, guard:]) ** 0.5 + rounding
            a = values[guard]
            mu = _coupled(a, mu_out, coupling)
        if theta_k > mu:
            bound = min(bound, math.sqrt(1 + (unwanted / gap_k) ** 2) * gamma / (theta_k - mu))
        if bound <= enough:
            break
    return bound


def _coupled(a: float, d: float, c: float) -> float:
    """The largest eigenvalue of [[a, c], [c, d]]: an upper bound on a symmetric block matrix whose diagonal blocks
    are at most a and d and whose off-diagonal block has norm c."""
    return (a + d) / 2 + math.sqrt(((a - d) / 2) ** 2 + c**2)


def _largest(gram: torch.Tensor) -> float:
    """The largest eigenvalue of a symmetric positive semi-definite matrix."""
    return max(0.0, float(torch.linalg.eigvalsh(gram)[-1])) if gram.numel() else 0.0


def _at_most(gram: torch.Tensor) -> float:
    """An upper bound on the largest eigenvalue of a symmetric matrix, without an eigensolver: the smaller of the
    largest absolute row sum (Gershgorin) and the Frobenius norm."""
    if not gram.numel():
        return 0.0
    return min(float(gram.abs().sum(1).max()), float(torch.linalg.matrix_norm(gram)))


def block_size(k: int, rank: int) -> int:
    """Columns of the reference kept (K): k and a margin, the block the fast method works in and the next singular
    value past it, which bounds its error: k/2 more (at least 16) while that stays within FAST_SHARE of the rank.
    Measured on SmolLM2 at k = 64 (2 cores): a margin of k certified more matrices in two products, k/2 was
    faster overall (1.3 to 1.5 s against 1.7 to 1.9 s), both with every bound under 0.5°."""
    margin = max(16, min(math.ceil(k / 2), math.floor(FAST_SHARE * rank) - k))
    return min(rank, k + margin)


def resolve(method: Method, shape: tuple[int, int], k: int, ref: TopK | None, shift: float | None) -> Method:
    """The method `top_k` takes: exact unless the reference's wider block and ‖W − W_b‖_F are at hand; auto = fast
    where the block is at most FAST_SHARE of the rank."""
    rank = min(shape)
    k = min(k, rank)
    usable = ref is not None and shift is not None and ref.next_s is not None and ref.u.shape[1] > k
    if not usable:
        return "exact"
    assert ref is not None
    if method == "auto":
        return "fast" if ref.u.shape[1] <= FAST_SHARE * rank else "exact"
    return method


def starts_right(shape: tuple[int, int]) -> bool:
    """Whether the fast method starts from the right vectors: it starts on the longer side, so that the products
    P and their float64 Gram matrices are the short side's."""
    m, n = shape
    return n >= m


def moved(delta: torch.Tensor, ref: TopK, width: int) -> torch.Tensor:
    """ΔW applied to the reference's first `width` vectors on the side the fast method starts from: ΔW V (m × width)
    or ΔWᵀ U (n × width), float32. Its first k columns give C = U_kᵀ ΔW V_k; with the reference's own U Σ (or
    V Σ) beside it, it is the fast method's first product W V = U Σ + ΔW V, so one product serves both."""
    if starts_right(tuple(delta.shape)):
        return delta @ ref.v[:, :width].float()
    return delta.T @ ref.u[:, :width].float()


def top_k(w: torch.Tensor, k: int, method: Method = "auto", ref: TopK | None = None, shift: float | None = None,
          norm: float | None = None, moved_block: torch.Tensor | None = None) -> TopK:  # fmt: skip
    """The top-k triplets of W by `method` (see `resolve`); fast falls back to exact when its bound exceeds
    FALLBACK_DEG. `moved_block`: `moved(W − W_b, ref, K)`, when the caller has it."""
    k = min(k, *w.shape)
    if resolve(method, tuple(w.shape), k, ref, shift) == "fast":
        assert ref is not None and shift is not None
        result = fast_top(w, k, ref, shift, target_deg=FALLBACK_DEG, norm=norm, moved_block=moved_block)
        if result.error_deg is not None and result.error_deg <= FALLBACK_DEG:
            return result
        exact = exact_top(w, k + 1)
        return TopK(exact.u[:, :k], exact.s[:k], exact.v[:, :k], float(exact.s[k]) if len(exact.s) > k else None,
                    "exact (fast fell back)", result.error_deg)  # fmt: skip
    return exact_top(w, k + 1).head(k)


def principal_angles(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Principal angles (radians, ascending) between the spans of two orthonormal bases with the same column count,
    accurate for small angles too: arcsin of the sines where the cosine is near 1, arccos elsewhere (as scipy).
    Bases orthonormal only to ε (float32: 1e-7) move the angles by about ε, since the sines come from the
    residual b − a aᵀb computed explicitly, not from 1 − cos². `dtype` float32 (for the fast method's bases, whose
    own bound is far larger) computes the products in float32: the angles move by about 1e-6 rad."""
    a, b = a.to(dtype), b.to(dtype)
    if a.shape[1] >= a.shape[0]:  # two bases of the whole space: every angle is 0 by dimension
        return torch.zeros(a.shape[1], dtype=DTYPE, device=a.device)
    cross = a.T @ b
    residual = b - a @ cross  # its singular values are the sines
    # the squared sines as eigenvalues of the small Gram matrix (float64: the squares lose nothing that matters above
    # 1e-8 rad, and cost half an SVD); past 45° the cosine's form, as scipy, with cos² = 1 − sin² (both O(1) there)
    sin2 = torch.linalg.eigvalsh((residual.T @ residual).to(DTYPE)).clamp(0.0, 1.0)  # ascending: angles ascending
    return torch.where(sin2 <= 0.5, torch.arcsin(sin2.sqrt()), torch.arccos((1.0 - sin2).sqrt()))


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
        radians = self.angles.tolist()  # k floats: plain Python, not a tensor operation each (threads share the GIL)
        degrees = sorted(math.degrees(a) for a in radians)
        chordal = math.sqrt(math.fsum(math.sin(a) ** 2 for a in radians))
        return {"mean_angle_deg": math.fsum(degrees) / len(degrees),
                "median_angle_deg": degrees[(len(degrees) - 1) // 2],  # the lower median, as torch.median
                "max_angle_deg": degrees[-1], "chordal": chordal,
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
        drifts = self.sigma_drift.tolist()
        return math.fsum(abs(d) for d in drifts) / len(drifts)


def compare(ref: TopK, w_b: torch.Tensor, w_t: torch.Tensor, k: int, method: Method = "auto") -> MatrixReading:
    """Read a checkpoint's matrix W_t against the reference's W_b, whose top triplets `ref` holds (k of them or more,
    with the next singular value; the wider block lets the fast method start from it and bound its error)."""
    m, n = w_t.shape
    k = min(k, m, n, ref.u.shape[1])
    delta = w_t.float() - w_b.float()  # exact in float32 where the two are within a factor of 2 (Sterbenz)
    total = float(torch.linalg.vector_norm(delta)) ** 2  # float32 norms: cascade sums, relative error ≪ 1e-5
    big = ref.u.shape[1]
    if ref.next_s is not None:  # ‖W_b‖_F from the reference's spectrum, at most: no pass over W_b
        norm_b = math.sqrt(float(ref.s.double().pow(2).sum()) + (min(m, n) - big) * ref.next_s**2)
    else:
        norm_b = float(torch.linalg.vector_norm(w_b.float()))
    shift = math.sqrt(total) * (1 + 1e-5) + 4 * U32 * norm_b
    chosen = resolve(method, (m, n), k, ref, shift)
    block = moved(delta, ref, big if chosen == "fast" else k)  # one product: C below, and fast's first product
    top = top_k(w_t, k, chosen, ref=ref, shift=shift, norm=norm_b + shift,
                moved_block=block if chosen == "fast" else None)  # fmt: skip
    base = ref.head(k)
    fast = top.method == "fast"  # float32 products for the angles: 1e-6 rad, under the bound reported with them
    u = SideReading(k, m, principal_angles(base.u, top.u, torch.float32 if fast else DTYPE), forced_zero(k, m))
    v = SideReading(k, n, principal_angles(base.v, top.v, torch.float32 if fast else DTYPE), forced_zero(k, n))
    sb = base.s.to(DTYPE)
    drift = torch.where(sb > 0, (top.s.to(DTYPE) - sb) / sb.clamp(min=torch.finfo(DTYPE).tiny), torch.zeros_like(sb))
    shares: tuple[float | None, float | None, float | None] = (None, None, None)
    if total > 0:
        if starts_right((m, n)):  # C = U_kᵀ (ΔW V_k), or (ΔWᵀ U_k)ᵀ V_k; float32: shares to 1e-6 of ‖ΔW‖²
            c = (base.u.T.float() @ block[:, :k]).to(DTYPE)
        else:
            c = (block[:, :k].T @ base.v.float()).to(DTYPE)
        diag = float(torch.diagonal(c).pow(2).sum())
        inside = float(c.pow(2).sum())
        shares = (diag / total, (inside - diag) / total, max(0.0, total - inside) / total)
    gap = None
    if top.next_s is not None and float(top.s[k - 1]) > 0:
        gap = (float(top.s[k - 1]) - top.next_s) / float(top.s[k - 1])
    return MatrixReading(k, u, v, drift, *shares, gap, top.method, top.error_deg)
