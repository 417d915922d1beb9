"""The spectral numbers against independent computations: scipy's angles, constructed rotations, pure rescaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import healer.spectral.linalg as linalg
from healer.spectral.linalg import (
    FALLBACK_DEG,
    FAST_STEPS,
    compare,
    exact_top,
    fast_top,
    forced_zero,
    moved,
    principal_angles,
    top_k,
)

F64 = torch.float64


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))[0]


def spectrum_matrix(m: int, n: int, seed: int, decay: float = 0.9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U diag(s) Vᵀ with random orthogonal U (m × m), V (n × n) and well-separated singular values."""
    r = min(m, n)
    s = torch.tensor([10.0 * decay**i for i in range(r)], dtype=F64)
    return orthonormal(m, m, seed), s, orthonormal(n, n, seed + 1)


@pytest.mark.parametrize(("n", "k", "seed"), [(40, 5, 0), (64, 16, 1), (30, 15, 2), (12, 12, 3), (200, 3, 4)])
def test_principal_angles_equal_scipy(n: int, k: int, seed: int) -> None:
    a, b = orthonormal(n, k, seed), orthonormal(n, k, seed + 100)
    ours = principal_angles(a, b).numpy()
    theirs = np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy()))
    assert np.abs(ours - theirs).max() < 1e-6
    assert np.all(np.diff(ours) >= -1e-12), "ascending"


def test_small_angles_are_accurate_where_arccos_is_not() -> None:
    a = orthonormal(50, 4, 7)
    tilted = torch.linalg.qr(a + 1e-7 * orthonormal(50, 4, 8))[0]
    ours = principal_angles(a, tilted).numpy()
    theirs = np.sort(scipy.linalg.subspace_angles(a.numpy(), tilted.numpy()))
    assert np.all(ours > 1e-8) and np.abs(ours - theirs).max() < 1e-12


def givens(dimension: int, k: int, angles: list[float]) -> torch.Tensor:
    """An orthogonal matrix rotating basis vector i towards basis vector k + i by angles[i], for i < len(angles)."""
    r = torch.eye(dimension, dtype=F64)
    for i, theta in enumerate(angles):
        j = k + i
        r[i, i], r[j, j], r[i, j], r[j, i] = math.cos(theta), math.cos(theta), -math.sin(theta), math.sin(theta)
    return r


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_a_constructed_rotation_is_recovered(method: str) -> None:
    m, n, k = 48, 64, 6
    u, s, v = spectrum_matrix(m, n, 11)
    w_b = u[:, :m] @ torch.diag(s) @ v[:, :m].T
    left = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4]  # radians, one per top direction
    right = [0.02, 0.0, 0.15, 0.0, 0.25, 0.05]
    # rotate in the singular bases: u_i towards u_{k+i}; the top-k subspace turns by exactly those angles
    r_u = u @ givens(m, k, left) @ u.T
    r_v = v @ givens(n, k, right) @ v.T
    w_t = r_u @ w_b @ r_v.T
    ref = exact_top(w_b, 21).head(20)
    reading = compare(ref, w_b, w_t, k, method)
    assert reading.method == method
    tolerance = 1e-8 if method == "exact" else math.radians(reading.error_deg)  # fast: float32, within its bound
    assert torch.allclose(reading.u.angles, torch.tensor(sorted(left), dtype=F64), atol=tolerance)
    assert torch.allclose(reading.v.angles, torch.tensor(sorted(right), dtype=F64), atol=tolerance)
    assert reading.sigma_drift.abs().max() < (1e-10 if method == "exact" else 1e-5), "a rotation keeps the σ"


def test_pure_rescaling_gives_zero_angles_and_the_drift() -> None:
    u, s, v = spectrum_matrix(30, 50, 21)
    w_b = u @ torch.diag(s) @ v[:, :30].T
    factors = torch.linspace(1.01, 1.10, 30, dtype=F64)
    w_t = u @ torch.diag(s * factors) @ v[:, :30].T
    reading = compare(exact_top(w_b, 9).head(9), w_b, w_t, 8, "exact")
    assert reading.u.angles.max() < 1e-6 and reading.v.angles.max() < 1e-6
    assert torch.allclose(reading.sigma_drift, factors[:8] - 1, atol=1e-10)
    assert abs(reading.sigma_rel_drift - float((factors[:8] - 1).mean())) < 1e-10
    assert reading.energy_rotation < 1e-12 and reading.energy_diag > 0.0
    assert abs(reading.energy_diag + reading.energy_outside - 1.0) < 1e-10


@pytest.mark.parametrize(("m", "n", "k", "zero_u", "zero_v"), [
    (16, 128, 12, 8, 0),  # short and wide (a k/v projection): 12 of 16 dimensions, so 2·12 − 16 = 8 shared
    (128, 16, 12, 0, 8),  # tall and narrow
    (64, 64, 20, 0, 0),
])  # fmt: skip
def test_forced_zero_angles_for_short_wide_and_tall_narrow(m: int, n: int, k: int, zero_u: int, zero_v: int) -> None:
    g = torch.Generator().manual_seed(5)
    w_b = torch.randn(m, n, generator=g, dtype=F64)
    w_t = w_b + 0.5 * torch.randn(m, n, generator=g, dtype=F64)
    reading = compare(exact_top(w_b, k + 1), w_b, w_t, k, "exact")
    assert (reading.u.forced_zero, reading.v.forced_zero) == (zero_u, zero_v) == (forced_zero(k, m), forced_zero(k, n))
    for side in (reading.u, reading.v):
        assert int((side.angles < 1e-6).sum()) >= side.forced_zero, "at least that many angles are 0"


def test_k_is_capped_at_the_rank() -> None:
    w = torch.randn(10, 30, dtype=F64)
    reading = compare(exact_top(w, 40), w, w * 1.5, 768, "exact")
    assert reading.k == 10 and reading.u.forced_zero == 10, "the whole 10-dimensional column space: all forced"


def fine_tuned(m: int, n: int, seed: int, update: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight-like matrix (power-law spectrum σ_i ∝ (i + 1)^-0.6, random singular vectors, so gaps of a few %
    and less) and a fine-tuned copy: a rank-8 update of `update` · ‖W‖_F plus a tenth of that in noise."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    u = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=F64))[0]
    v = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=F64))[0]
    w_b = (u * (torch.arange(r, dtype=F64) + 1) ** -0.6) @ v.T
    low = torch.randn(m, 8, generator=g, dtype=F64) @ torch.randn(8, n, generator=g, dtype=F64)
    noise = torch.randn(m, n, generator=g, dtype=F64)
    norm = float(w_b.norm())
    return w_b, w_b + update * norm * (low / low.norm() + 0.1 * noise / noise.norm())


@pytest.mark.parametrize("first", ["product", "moved"])
@pytest.mark.parametrize(("m", "n", "k", "seed"), [(384, 160, 16, 1), (160, 384, 24, 2), (256, 256, 8, 3)])
def test_fast_bound_holds_against_scipy_svd(m: int, n: int, k: int, seed: int, first: str) -> None:
    w_b, w_t = fine_tuned(m, n, seed, 0.002)
    ref = exact_top(w_b, 2 * k + 1).head(2 * k)
    shift = float((w_t - w_b).norm())
    block = moved((w_t - w_b).float(), ref, 2 * k) if first == "moved" else None  # U Σ + ΔW V, or W V itself
    fast = fast_top(w_t.float(), k, ref, shift, moved_block=block)
    assert fast.method == "fast" and fast.error_deg is not None and fast.error_deg <= FALLBACK_DEG, fast.error_deg
    u, _, vh = np.linalg.svd(w_t.numpy())  # independent: LAPACK's SVD in float64, scipy's angles
    for ours, true in ((fast.u, u[:, :k]), (fast.v, vh[:k].T)):
        error = math.degrees(float(np.max(scipy.linalg.subspace_angles(ours.numpy(), true))))
        assert error <= fast.error_deg, (error, fast.error_deg)
    assert top_k(w_t, k, "auto", ref, shift).method == "fast"


def test_fast_falls_back_to_exact_when_it_cannot_bound_its_error() -> None:
    w_b, w_t = fine_tuned(200, 120, 9, 0.3)  # an update far larger than the gaps: no bound can certify
    ref = exact_top(w_b, 21).head(20)
    result = top_k(w_t, 10, "fast", ref, float((w_t - w_b).norm()))
    assert result.method == "exact (fast fell back)" and result.error_deg > FALLBACK_DEG
    exact = exact_top(w_t, 11)
    assert principal_angles(result.u, exact.u[:, :10]).max() < 1e-8


@pytest.mark.parametrize(
    ("previous", "error", "left", "goes_on"),
    [
        (None, 3.0, 7, True),  # one step taken: no rate yet
        (None, 3.0, 0, False),  # no step left
        (2.0, 1.0, 1, True),  # halving: 1.0 -> 0.5 in the one step left, the target
        (1.0, 0.9, 2, False),  # 0.9 -> 0.73 in two: too slow for 0.5
        (1.0, 0.9, 6, True),  # 0.9 -> 0.48 in six
        (1.0, 1.2, 6, False),  # the bound rose: stalled
        (math.inf, math.inf, 6, False),  # still infinite after a step
        (math.inf, 2.0, 6, True),  # finite now: keep going
    ],
)
def test_the_fast_method_goes_on_only_while_its_bound_can_reach_the_target(
    previous: float | None, error: float, left: int, goes_on: bool
) -> None:
    assert linalg._converging(previous, error, 0.5, left) is goes_on


def test_a_bound_that_cannot_get_there_stops_the_steps_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """The update far larger than the gaps: the bound stays at 90° (without the rule it is still 36° after eight
    steps), so fast gives up after two steps instead of spending all FAST_STEPS products before the exact method."""
    w_b, w_t = fine_tuned(200, 120, 9, 0.3)
    ref = exact_top(w_b, 21).head(20)
    bounds: list[float] = []
    real = linalg._bound

    def counted(*args: object, **kwargs: object) -> float:
        bounds.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return bounds[-1]

    monkeypatch.setattr(linalg, "_bound", counted)
    # a shift below ‖ΔW‖_F (no valid bound: only so that the check before any product lets the steps run)
    result = fast_top(w_t, 10, ref, float((w_t - w_b).norm()) / 100)
    assert result.error_deg is not None and result.error_deg > FALLBACK_DEG
    assert 2 <= len(bounds) < FAST_STEPS, bounds


def test_auto_is_exact_without_a_wider_reference_block() -> None:
    w_b, w_t = fine_tuned(120, 100, 4, 0.002)
    assert top_k(w_t, 10, "auto", exact_top(w_b, 10), 1e-3).method == "exact", "no σ past the block: no bound"
    assert top_k(w_t, 10, "auto").method == "exact"


def test_nearly_orthonormal_float32_bases_give_the_small_angles_of_their_spans() -> None:
    a = orthonormal(300, 12, 41)
    b = torch.linalg.qr(a + 1e-5 * orthonormal(300, 12, 42))[0]  # angles near 1e-5 rad
    truth = np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy()))
    a32, b32 = a.float().double(), b.float().double()  # orthonormal only to ~1e-7 (1 − cos² would read 3e-4 rad)
    spans = np.sort(scipy.linalg.subspace_angles(np.linalg.qr(a32.numpy())[0], np.linalg.qr(b32.numpy())[0]))
    assert np.abs(spans - truth).max() < 1e-6, "rounding to float32 moves the spans by ~1e-7 rad only"
    ours = principal_angles(a32, b32).numpy()
    assert np.abs(ours - spans).max() < 1e-9, (ours, spans)  # 1e-11 measured
