"""The native kernels' exp, against the double-precision exp: the scans' decays and attention's
weights go through `exp_in_place` (a table-driven AVX-512 exp where the CPU has it), and the
loops GCC vectorises through `exp_fast`; both must stay within about 1 ulp, give exactly 0 at
-inf and below -86.5, and keep NaN a NaN (a diverging trial must be seen to diverge)."""

from __future__ import annotations

import math

import pytest
import torch

from trials.ops import native

pytestmark = pytest.mark.skipif(native.library() is None, reason="needs the native kernels")

WHOLE, ONE_AT_A_TIME = 1, 0


def native_exp(x: torch.Tensor, whole: int) -> torch.Tensor:
    out = x.clone()
    native.entry("exp", out)(native.pointer(out), out.numel(), whole)
    return out


def ulps(got: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|got - exp(x)| in units of the last place of the float nearest exp(x)."""
    exact = torch.exp(x.double())
    nearest = exact.float()
    spacing = torch.nextafter(nearest, torch.tensor(math.inf)).double() - nearest.double()
    return (got.double() - exact).abs() / spacing


@pytest.mark.parametrize("whole", [WHOLE, ONE_AT_A_TIME])
def test_exp_is_within_about_one_ulp_over_the_whole_range(whole):
    # every float exponent between the cut at -86.5 and overflow, 300k values, odd count:
    # whole vectors and a remainder
    x = torch.linspace(-86.4, 88.0, 300_001, dtype=torch.float32)
    error = ulps(native_exp(x, whole), x)
    assert error.max().item() <= 1.05, (x[error.argmax()].item(), error.max().item())
    # at the small scale of the scans' dt A and attention's centred scores as well
    small = torch.linspace(-1.0, 1.0, 100_003, dtype=torch.float32)
    assert ulps(native_exp(small, whole), small).max().item() <= 1.05


@pytest.mark.parametrize("whole", [WHOLE, ONE_AT_A_TIME])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40])
def test_exp_special_values_at_every_lane(whole, n):
    special = torch.tensor([-math.inf, -1e30, -86.6, 0.0, -0.0, 1.0, math.nan, 89.0, math.inf])
    for shift in range(n):  # each value at each position, so every lane and the tail see it
        x = torch.full((n,), 0.5)
        for offset, value in enumerate(special):
            x[(shift + offset) % n] = value
        got = native_exp(x, whole)
        for index in range(n):
            value, result = x[index].item(), got[index].item()
            if math.isnan(value):
                assert math.isnan(result)
            elif value < -86.5:
                assert result == 0.0, (value, result)
            elif value >= 88.0:
                assert result == pytest.approx(math.exp(88.0), rel=2e-7)  # clamped, finite
            else:
                assert result == pytest.approx(math.exp(value), rel=2e-7), (value, result)


@pytest.mark.parametrize("whole", [WHOLE, ONE_AT_A_TIME])
def test_exp_in_double_keeps_double_precision(whole):
    x = torch.linspace(-700, 700, 1001, dtype=torch.float64)
    torch.testing.assert_close(native_exp(x, whole), torch.exp(x), rtol=1e-15, atol=0)
