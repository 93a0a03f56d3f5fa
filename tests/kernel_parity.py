"""A mixer's forward and every gradient on the native CPU kernels against the PyTorch fallback
(shared by the mixer test files; pytest puts this directory on the import path)."""

from __future__ import annotations

import torch

from trials.ops import dispatch


def assert_native_equals_fallback(module: torch.nn.Module, x: torch.Tensor,
                                  weights: torch.Tensor, ops: tuple[str, ...]) -> None:
    """`module(x)` and the gradients of sum(y * weights) with respect to x and every parameter,
    with the kernels and with `dispatch.disabled()`: equal within fp32 tolerance, and each run
    recorded `ops`: exactly those, native, then all of them and anything else PyTorch (a
    fallback may call further ops: softplus_linear's runs the softplus op)."""

    def output_and_grads():
        with dispatch.recording() as ran:
            y = module(x)
        grads = torch.autograd.grad((y * weights).sum(), [x, *module.parameters()])
        return y, grads, ran.kernels()

    y, grads, ran = output_and_grads()
    with dispatch.disabled():
        ref_y, ref_grads, ref_ran = output_and_grads()
    assert ran == dict.fromkeys(ops, dispatch.NATIVE)
    assert set(ops) <= set(ref_ran) and set(ref_ran.values()) == {dispatch.PYTORCH}, ref_ran
    torch.testing.assert_close(y, ref_y, atol=1e-5, rtol=1e-4)
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"gradient {i}")
