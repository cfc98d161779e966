r"""A model's forward over a leading client dimension, as plain torch ops on stacked parameters.

``vmap(grad(loss))`` costs a few milliseconds of interpreter overhead per call, whatever the
model's size, and FedAvg calls it once per local step. For models built from common layers this
module instead rewrites the ``torch.fx`` graph of the forward so that it runs directly on
activations ``h`` of shape ``(k, B, …)`` (client, sample, features) with stacked parameters
``(k, …)``, and differentiates with ordinary autograd:

* ``nn.Linear``: :math:`h W_c^\top + b_c` for every client :math:`c` as one
  ``torch.baddbmm`` (parameters ``(k, out, in)``, ``(k, out)``);
* ``nn.Conv2d``: one grouped convolution, clients as groups (inputs ``(B, k·C, H, W)``, weights
  ``(k·out, C/g, kh, kw)``, ``groups = k·g``) — the rule ``vmap`` itself uses;
* parameter-free per-sample layers (activations, pooling, ``Flatten``, ``torch.flatten``…): the
  same call on ``h`` viewed as ``(k·B, …)``;
* ``+ - *`` between activations or with constants, element-wise.

Since clients do not interact, the gradient of :math:`\sum_c L_c` with respect to client
:math:`c`'s parameter rows is :math:`\nabla L_c` — the per-client gradients in one backward pass.
Any other node (``get_attr``, shape arithmetic such as ``x.view(x.size(0), -1)``, modules with
parameters other than the two above) makes :func:`StackedForward.build` return ``None`` and the
caller keeps ``vmap``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["StackedForward"]

_PER_SAMPLE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus,
    nn.Mish, nn.Hardtanh, nn.Identity, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_PER_SAMPLE_FUNCTIONS: set[Callable[..., Any]] = {
    F.relu, torch.relu, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, F.tanh, torch.sigmoid,
    F.sigmoid, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, torch.flatten,
}
_PER_SAMPLE_METHODS = {"relu", "tanh", "sigmoid", "flatten"}
_ELEMENTWISE = {operator.add, operator.sub, operator.mul, torch.add, torch.mul}


class _Unsupported(Exception):
    pass


class _Tracer(fx.Tracer):
    """Keeps subclasses of the per-sample modules (``shieldwall.models.pooling.MaxPool2d``) as
    single calls, as ``torch.nn``'s own are, instead of tracing into their forward."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _PER_SAMPLE_MODULES) or super().is_leaf_module(
            m, module_qualified_name
        )


class RowOptimizer(Protocol):
    """What :class:`_StackedLinearStep` needs of :class:`~.batched_kernel.RowSGD`."""

    def step_one(self, i: int, k: int, grad: Tensor) -> None: ...

    def step_product(self, i: int, k: int, a: Tensor, b: Tensor) -> None: ...


InBackwardStep = tuple[RowOptimizer, dict[str, int], Tensor]
"""``(optimizer, parameter name → index, token)``: the token requires grad so that autograd
reaches every layer although no parameter does."""


class StackedForward:
    """Runs ``module``'s traced graph on ``(k, B, …)`` inputs with stacked parameters.

    Build with :meth:`build`; call with ``params`` (qualified name → ``(k, *shape)``) and ``x``.
    """

    def __init__(self, module: nn.Module, graph: fx.Graph) -> None:
        self.module = module
        self.nodes = list(graph.nodes)
        self.modules = dict(module.named_modules())
        calls = [str(n.target) for n in self.nodes if n.op == "call_module"]
        linear = [c for c in calls if isinstance(self.modules[c], nn.Linear)]
        others = [c for c in calls if list(self.modules[c].parameters())]
        self.linear_params: set[str] = set()
        """Trainable parameters of the ``nn.Linear`` layers, when those are the only modules
        with parameters and each is called once (else empty): they can step in backward."""
        if len(set(linear)) == len(linear) == len(others):
            self.linear_params = {
                f"{c}.{n}" if c else n
                for c in linear
                for n, p in self.modules[c].named_parameters()
                if p.requires_grad
            }

    @classmethod
    def build(cls, module: nn.Module) -> StackedForward | None:
        """The rewritten forward, or ``None`` when the graph has a node this module lacks."""
        try:
            graph = _Tracer().trace(module)
            gm = fx.GraphModule(module, graph)
            modules = dict(module.named_modules())
            for node in gm.graph.nodes:
                cls._check(node, modules)
        except Exception:  # noqa: BLE001 - untraceable or unsupported: use vmap instead
            return None
        return cls(module, gm.graph)

    @staticmethod
    def _check(node: fx.Node, modules: dict[str, nn.Module]) -> None:
        if node.op in ("placeholder", "output"):
            return
        if node.op == "call_module":
            m = modules[str(node.target)]
            if isinstance(m, nn.Linear):
                return
            if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
                return
            if isinstance(m, _PER_SAMPLE_MODULES) and not list(m.parameters()):
                return
        elif node.op == "call_function" and (
            node.target in _PER_SAMPLE_FUNCTIONS or node.target in _ELEMENTWISE
        ):
            return
        elif node.op == "call_method" and node.target in _PER_SAMPLE_METHODS:
            return
        raise _Unsupported(f"{node.op} {node.target}")

    def __call__(
        self, params: dict[str, Tensor], x: Tensor, step: InBackwardStep | None = None
    ) -> Tensor:
        """The logits ``(k, B, classes)``; with ``step``, each ``nn.Linear`` takes its SGD step
        in the backward pass instead of returning weight gradients (see :mod:`.batched_kernel`).
        """
        k, b = x.shape[0], x.shape[1]
        env: dict[fx.Node, Any] = {}

        def arg(a: Any) -> Any:
            return fx.node.map_arg(a, lambda n: env[n])

        def per_sample(fn: Callable[..., Tensor], h: Tensor, *rest: Any, **kw: Any) -> Tensor:
            out = fn(h.reshape(k * b, *h.shape[2:]), *rest, **kw)
            return out.view(k, b, *out.shape[1:])

        out: Tensor | None = None
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "output":
                out = arg(node.args[0])
            elif node.op == "call_module":
                name = str(node.target)
                m = self.modules[name]
                h = arg(node.args[0])
                if isinstance(m, nn.Linear):
                    env[node] = _linear(h, params, name, m, step)
                elif isinstance(m, nn.Conv2d):
                    env[node] = _conv2d(h, params, name, m)
                else:
                    env[node] = per_sample(m, h)
            elif node.op == "call_function" and node.target in _ELEMENTWISE:
                env[node] = node.target(*arg(node.args), **arg(node.kwargs))
            elif node.op == "call_function":
                h, *rest = arg(node.args)
                env[node] = per_sample(node.target, h, *rest, **arg(node.kwargs))
            else:  # call_method
                h, *rest = arg(node.args)
                env[node] = per_sample(_method(str(node.target)), h, *rest, **arg(node.kwargs))
        assert isinstance(out, Tensor)
        return out


def _method(name: str) -> Callable[..., Tensor]:
    return lambda t, *a, **kw: getattr(t, name)(*a, **kw)


def _param(params: dict[str, Tensor], name: str, m: nn.Module, attr: str) -> Tensor | None:
    full = f"{name}.{attr}" if name else attr
    if full in params:
        return params[full]
    value = getattr(m, attr)
    return None if value is None else value.expand(1, *value.shape)  # frozen: shared by all


class _StackedLinear(torch.autograd.Function):
    """``h @ W^T + b`` per client, with the weight gradient computed as ``g^T @ h``.

    Autograd's own ``bmm`` backward would form ``h^T @ g`` and transpose it, a layout several
    times slower on CPU for the short, wide matrices of small batches.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # PS-SGD: one weight expanded over the clients; the forward is then one plain matmul
        shared = weight.stride(0) == 0 and (bias is None or bias.stride(0) == 0)
        ctx.save_for_backward(h, weight)
        ctx.has_bias, ctx.shared = bias is not None, shared
        if shared:
            flat = h.reshape(-1, h.shape[-1])
            w0 = weight[0].t()
            out = torch.mm(flat, w0) if bias is None else torch.addmm(bias[0], flat, w0)
            return out.view(h.shape[0], h.shape[1], -1)
        wt = weight.transpose(1, 2)
        if bias is None:
            return torch.bmm(h, wt)
        return torch.baddbmm(bias.unsqueeze(1), h, wt)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        h, weight = ctx.saved_tensors
        dh = None
        if ctx.needs_input_grad[0]:
            if ctx.shared:
                dh = torch.mm(g.reshape(-1, g.shape[-1]), weight[0]).view(h.shape)
            else:
                dh = torch.bmm(g, weight)
        dw = torch.bmm(g.transpose(1, 2), h) if ctx.needs_input_grad[1] else None
        db = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dh, dw, db


class _StackedLinearStep(torch.autograd.Function):
    """``h @ W^T + b`` per client whose backward *steps* ``W`` and ``b`` (in place) instead of
    returning their gradients: the input gradient is taken first, from the old weights."""

    @staticmethod
    def forward(
        ctx: Any, h: Tensor, token: Tensor, weight: Tensor, bias: Tensor | None,
        opt: RowOptimizer, wi: int | None, bi: int | None,
    ) -> Tensor:
        ctx.save_for_backward(h)
        ctx.weight, ctx.opt, ctx.wi, ctx.bi = weight, opt, wi, bi  # not saved: stepped in place
        wt = weight.transpose(1, 2)
        out = torch.bmm(h, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, wt)
        return out + token  # the token (0) ties the output to the graph

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        (h,) = ctx.saved_tensors
        k = h.shape[0]
        dh = torch.bmm(g, ctx.weight) if ctx.needs_input_grad[0] else None
        if ctx.wi is not None:  # None: a frozen weight
            ctx.opt.step_product(ctx.wi, k, g.transpose(1, 2), h)
        if ctx.bi is not None:
            ctx.opt.step_one(ctx.bi, k, g.sum(1))
        return dh, None, None, None, None, None, None


def _linear(
    h: Tensor, params: dict[str, Tensor], name: str, m: nn.Linear,
    step: InBackwardStep | None = None,
) -> Tensor:
    k = h.shape[0]
    weight = _param(params, name, m, "weight")
    bias = _param(params, name, m, "bias")
    assert weight is not None
    flat = h.reshape(k, -1, h.shape[-1])
    weight = weight.expand(k, -1, -1)
    bias = None if bias is None else bias.expand(k, -1)
    if step is not None:
        opt, index, token = step
        prefix = f"{name}." if name else ""
        out = _StackedLinearStep.apply(
            flat, token, weight, bias, opt, index.get(prefix + "weight"),
            index.get(prefix + "bias"),
        )
    else:
        out = _StackedLinear.apply(flat, weight, bias)
    return out.view(*h.shape[:-1], out.shape[-1])


def _conv2d(h: Tensor, params: dict[str, Tensor], name: str, m: nn.Conv2d) -> Tensor:
    k, b, c = h.shape[0], h.shape[1], h.shape[2]
    weight = _param(params, name, m, "weight")
    bias = _param(params, name, m, "bias")
    assert weight is not None
    weight = weight.expand(k, *weight.shape[1:])
    grouped = h.transpose(0, 1).reshape(b, k * c, *h.shape[3:])
    out = F.conv2d(
        grouped,
        weight.reshape(k * weight.shape[1], *weight.shape[2:]),
        None if bias is None else bias.expand(k, -1).reshape(-1),
        m.stride, m.padding, m.dilation, m.groups * k,
    )
    return out.view(b, k, -1, *out.shape[2:]).transpose(0, 1)
