"""MACs and parameters of audio models, counted during one forward pass with real shapes.

Conventions (ERSAM, Li et al., ICASSP 2023, rank architectures by MACs and by energy on a Pixel 3):

- **1 MAC = one multiply-add** (``a += w * x``). Biases are not counted (they fold into the accumulator
  initialisation); neither are activations, pooling, dropout, softmax, reshapes or other elementwise ops.
- **BatchNorm** in inference is ``y = x * scale + shift``: 1 MAC per element. In deployment it folds into
  the preceding convolution's weights, so ``fold_bn=True`` (the default) counts it as 0. Normalisations
  that cannot fold (LayerNorm, GroupNorm, InstanceNorm) always count 1 MAC per element (the affine
  step; the statistics are treated like other elementwise reductions, as 0). Parameters of BN layers
  are always counted, as PyTorch stores them.
- **Conv1d/2d/3d**: ``out.numel() * (C_in / groups) * prod(kernel)`` — stride, dilation and padding act
  through the real output shape. ConvTranspose: ``in.numel() * (C_out / groups) * prod(kernel)``.
- **Linear**: ``out.numel() * in_features``.
- **RNNs**, per time step, layer and direction, with hidden size ``h``, layer input size ``i`` and
  recurrent size ``r`` (``= proj_size`` if set, else ``h``)::

      LSTM: 4*h*(i + r)  gate matmuls  + 3*h  (f*c, i*g, o*tanh(c))      [+ h*proj_size projection]
      GRU:  3*h*(i + r)  gate matmuls  + 3*h  (r*(W_hn h), (1-z)*n, z*h)
      RNN:  1*h*(i + r)

  summed over ``num_layers`` (layer ``l > 0`` reads ``i = num_directions * r``) and both directions when
  bidirectional, times the number of time steps and sequences.
- **MultiheadAttention** (query length ``L``, key length ``S``, ``E = embed_dim``)::

      L*q_dim*E + S*k_dim*E + S*v_dim*E  (in-projections)  + 2*L*S*E  (QK^T, AV)  + L*E*E  (out-projection)

- **Functional ops** issued directly in a module's ``forward`` (not inside a counted layer) are caught
  with a :class:`~torch.overrides.TorchFunctionMode`: ``torch.stft``, matmul / ``@`` / ``mm`` / ``bmm`` /
  ``addmm`` / ``baddbmm``, ``einsum`` (two operands: product of all index sizes), ``F.linear``,
  ``F.conv1d/2d/3d`` and ``F.scaled_dot_product_attention``. Their MACs are attributed to that module.
- **STFT** (FFT estimate, the ONNX ``STFT`` op is costed the same): per frame ``n_fft`` window
  multiplies plus ``(n_fft / 2) * log2(n_fft)`` complex multiplies of a radix-2 FFT, each 4 real MACs::

      stft_macs = frames * (n_fft + 4 * (n_fft / 2) * log2(n_fft))

  The magnitude / power and the log are elementwise (0). A mel filterbank applied as a dense matmul
  costs ``n_freqs * n_mels * frames`` (torchaudio's ``MelScale`` does exactly that matmul).

Custom modules whose MACs are not visible to the counter — for example an attention-pooling head that
computes ``(softmax(scores) * x).sum(-1)`` with elementwise ops — declare them with a method::

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        # MACs of this module's own forward, excluding its submodules (those are counted by hooks)
        ...

``input_shape`` is the shape of the first tensor argument of that call. A module that defines
``extra_macs`` owns the accounting of the ops its ``forward`` issues directly, so the functional-op
detection is switched off for those (not for its submodules). :func:`stft_macs`, :func:`matmul_macs` and
:func:`mel_filterbank_macs` help write it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode

__all__ = [
    "CostReport",
    "ModuleCost",
    "count_macs",
    "count_params",
    "dummy_waveform",
    "example_args",
    "matmul_macs",
    "mel_filterbank_macs",
    "register_mac_formula",
    "rnn_macs",
    "stft_macs",
]

FormulaFn = Callable[[nn.Module, tuple, dict, Any, "_CountConfig"], int]
_FORMULAS: dict[type, FormulaFn] = {}


@dataclass(frozen=True)
class ModuleCost:
    """Cost of one module (or of the functional ops issued directly in its ``forward``)."""

    name: str
    type: str
    macs: int
    params: int


@dataclass(frozen=True)
class CostReport:
    """MACs and parameters of one forward pass.

    Attributes:
        macs: Total multiply-adds for the example input (one 5 s segment by default).
        params: Number of distinct parameters of the model.
        breakdown: Per-module costs in call order; functional ops appear with type ``"fn:<op>"``.
        unrecognized: Leaf modules with parameters that were called but have no formula and no
            ``extra_macs`` — their MACs are missing from ``macs``.
    """

    macs: int
    params: int
    breakdown: tuple[ModuleCost, ...] = ()
    unrecognized: tuple[str, ...] = ()

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def by_type(self) -> dict[str, int]:
        """MACs summed per module type, largest first."""
        out: dict[str, int] = {}
        for item in self.breakdown:
            out[item.type] = out.get(item.type, 0) + item.macs
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs": self.macs,
            "params": self.params,
            "breakdown": [asdict(b) for b in self.breakdown],
            "unrecognized": list(self.unrecognized),
        }

    def table(self, top: int | None = 20) -> str:
        """A plain-text table of the most expensive modules."""
        rows = sorted(self.breakdown, key=lambda b: -b.macs)[:top]
        lines = [f"{'module':<48} {'type':<24} {'MMACs':>10} {'params':>10}"]
        for b in rows:
            lines.append(f"{b.name or '<root>':<48} {b.type:<24} {b.macs / 1e6:>10.3f} {b.params:>10d}")
        lines.append(f"{'total':<48} {'':<24} {self.macs / 1e6:>10.3f} {self.params:>10d}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _CountConfig:
    fold_bn: bool = True


def register_mac_formula(*module_types: type) -> Callable[[FormulaFn], FormulaFn]:
    """Register ``formula(module, args, kwargs, output, config) -> int`` for module types (and subclasses).

    A registered module is costed as a whole: its submodules are not hooked.
    """

    def deco(fn: FormulaFn) -> FormulaFn:
        for t in module_types:
            _FORMULAS[t] = fn
        return fn

    return deco


def _find_formula(module: nn.Module) -> FormulaFn | None:
    for cls in type(module).__mro__:
        if cls in _FORMULAS:
            return _FORMULAS[cls]
    return None


# ----------------------------------------------------------------------------------------------------
# Pure formulas (also usable in ``extra_macs``)


def stft_macs(n_fft: int, num_frames: int, num_signals: int = 1) -> int:
    """FFT-based STFT estimate: per frame ``n_fft`` window MACs + 4 real MACs per complex multiply."""
    if n_fft < 1 or num_frames < 0:
        raise ValueError(f"need n_fft >= 1 and num_frames >= 0, got {n_fft}, {num_frames}")
    per_frame = n_fft + 4.0 * (n_fft / 2.0) * math.log2(n_fft) if n_fft > 1 else 1.0
    return int(round(num_signals * num_frames * per_frame))


def mel_filterbank_macs(n_freqs: int, n_mels: int, num_frames: int, num_signals: int = 1) -> int:
    """A dense ``[frames, n_freqs] @ [n_freqs, n_mels]`` filterbank matmul."""
    return num_signals * num_frames * n_freqs * n_mels


def matmul_macs(a_shape: Sequence[int], b_shape: Sequence[int]) -> int:
    """MACs of ``torch.matmul(a, b)`` for the given shapes (with broadcasting of batch dims)."""
    a, b = list(a_shape), list(b_shape)
    if not a or not b:
        raise ValueError("matmul needs tensors with at least one dimension")
    if len(a) == 1:
        a = [1, a[0]]
    if len(b) == 1:
        b = [b[0], 1]
    if a[-1] != b[-2]:
        raise ValueError(f"inner dimensions differ: {tuple(a_shape)} @ {tuple(b_shape)}")
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def rnn_macs(
    mode: str,
    input_size: int,
    hidden_size: int,
    seq_len: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    batch: int = 1,
) -> int:
    """MACs of an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` over ``seq_len`` steps (see the module docstring)."""
    gates, elementwise = {"LSTM": (4, 3), "GRU": (3, 3), "RNN_TANH": (1, 0), "RNN_RELU": (1, 0)}[mode]
    recurrent = proj_size or hidden_size
    dirs = 2 if bidirectional else 1
    per_step = 0
    layer_in = input_size
    for _ in range(num_layers):
        step = gates * hidden_size * (layer_in + recurrent) + elementwise * hidden_size
        if proj_size:
            step += hidden_size * proj_size
        per_step += dirs * step
        layer_in = dirs * recurrent
    return per_step * seq_len * batch


# ----------------------------------------------------------------------------------------------------
# Module formulas


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | PackedSequence | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (torch.Tensor, PackedSequence)):
            return a
    return None


def _first_output(output: Any) -> torch.Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, PackedSequence):
        return output.data
    return output


@register_mac_formula(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv_formula(m: nn.Module, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    out = _first_output(output)
    return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


@register_mac_formula(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose_formula(m: nn.Module, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    x = _first_tensor(args, kwargs)
    return x.numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)


@register_mac_formula(nn.Linear)
def _linear_formula(m: nn.Module, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    return _first_output(output).numel() * m.in_features


@register_mac_formula(nn.Bilinear)
def _bilinear_formula(m: nn.Module, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    return _first_output(output).numel() * m.in1_features * m.in2_features


@register_mac_formula(nn.modules.batchnorm._BatchNorm)
def _batchnorm_formula(m: nn.Module, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    return 0 if cfg.fold_bn else _first_output(output).numel()


@register_mac_formula(nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
def _norm_formula(m: nn.Module, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    return _first_output(output).numel()


@register_mac_formula(nn.RNNBase)
def _rnn_formula(m: nn.RNNBase, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    x = _first_tensor(args, kwargs)
    if isinstance(x, PackedSequence):
        seq_len, batch = x.data.shape[0], 1  # packed data already holds every (sequence, step) row
    elif x.dim() == 2:
        seq_len, batch = x.shape[0], 1
    elif m.batch_first:
        batch, seq_len = x.shape[0], x.shape[1]
    else:
        seq_len, batch = x.shape[0], x.shape[1]
    return rnn_macs(
        m.mode,
        m.input_size,
        m.hidden_size,
        seq_len,
        num_layers=m.num_layers,
        bidirectional=m.bidirectional,
        proj_size=getattr(m, "proj_size", 0),
        batch=batch,
    )


@register_mac_formula(nn.RNNCellBase)
def _rnn_cell_formula(m: nn.RNNCellBase, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    x = _first_tensor(args, kwargs)
    batch = x.shape[0] if x.dim() == 2 else 1
    mode = {nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}.get(type(m), "RNN_TANH")
    return rnn_macs(mode, m.input_size, m.hidden_size, 1, batch=batch)


@register_mac_formula(nn.MultiheadAttention)
def _mha_formula(m: nn.MultiheadAttention, args: tuple, kwargs: dict, output: Any, cfg: _CountConfig) -> int:
    names = ("query", "key", "value")
    q, k, v = (args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names))
    if q.dim() == 2:
        batch, seq_q, seq_k = 1, q.shape[0], k.shape[0]
    elif m.batch_first:
        batch, seq_q, seq_k = q.shape[0], q.shape[1], k.shape[1]
    else:
        batch, seq_q, seq_k = q.shape[1], q.shape[0], k.shape[0]
    e = m.embed_dim
    in_proj = seq_q * q.shape[-1] * e + seq_k * k.shape[-1] * e + seq_k * v.shape[-1] * e
    attention = 2 * seq_q * seq_k * e
    out_proj = seq_q * e * e
    return batch * (in_proj + attention + out_proj)


# ----------------------------------------------------------------------------------------------------
# Functional ops


def _fn_macs(name: str, args: tuple, kwargs: dict, out: Any) -> int | None:
    """MACs of a functional op, or None if the op is not one we cost."""
    if name in ("matmul", "__matmul__", "mm", "bmm"):
        return matmul_macs(args[0].shape, args[1].shape)
    if name == "__rmatmul__":
        return matmul_macs(args[1].shape, args[0].shape)
    if name in ("addmm", "baddbmm"):
        a = args[1] if len(args) > 1 else kwargs.get("mat1", kwargs.get("batch1"))
        b = args[2] if len(args) > 2 else kwargs.get("mat2", kwargs.get("batch2"))
        return matmul_macs(a.shape, b.shape)
    if name == "linear":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return _first_output(out).numel() * weight.shape[-1]
    if name in ("conv1d", "conv2d", "conv3d"):
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return _first_output(out).numel() * math.prod(weight.shape[1:])
    if name == "scaled_dot_product_attention":
        q, k, v = args[:3]
        return math.prod(q.shape[:-2]) * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    if name == "stft":
        n_fft = args[1] if len(args) > 1 else kwargs["n_fft"]
        spec = _first_output(out)
        shape = spec.shape if spec.is_complex() else spec.shape[:-1]
        return stft_macs(int(n_fft), shape[-1], num_signals=math.prod(shape[:-2]))
    if name == "einsum":
        equation, operands = args[0], args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        if len(operands) < 2:
            return 0
        sizes: dict[str, int] = {}
        lhs = equation.replace(" ", "").split("->")[0].split(",")
        if any("..." in term for term in lhs):
            return None
        for term, tensor in zip(lhs, operands):
            for letter, size in zip(term, tensor.shape):
                sizes[letter] = size
        return math.prod(sizes.values())
    return None


class _FunctionalCounter(TorchFunctionMode):
    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        counter = self.counter
        if counter.suppress == 0 and counter.stack:
            name = getattr(func, "__name__", "")
            macs = _fn_macs(name, args, kwargs, out) if name in _FN_NAMES else None
            if macs:
                counter.add_functional(name.strip("_").replace("rmatmul", "matmul"), macs)
        return out


_FN_NAMES = frozenset(
    {
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "mm",
        "bmm",
        "addmm",
        "baddbmm",
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "scaled_dot_product_attention",
        "stft",
        "einsum",
    }
)


# ----------------------------------------------------------------------------------------------------
# Counter


@dataclass
class _Entry:
    name: str
    type: str
    macs: int = 0


@dataclass
class _Counter:
    config: _CountConfig
    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    stack: list[tuple[str, nn.Module]] = field(default_factory=list)
    suppress: int = 0
    called: set[str] = field(default_factory=set)

    def entry(self, name: str, type_name: str) -> _Entry:
        key = (name, type_name)
        if key not in self.entries:
            self.entries[key] = _Entry(name, type_name)
        return self.entries[key]

    def add_functional(self, op: str, macs: int) -> None:
        name, module = self.stack[-1]
        if hasattr(module, "extra_macs"):
            return  # the module declares its own ops
        self.entry(name, f"fn:{op}").macs += macs


def _shape_of_first_tensor(args: tuple, kwargs: dict) -> tuple[int, ...]:
    x = _first_tensor(args, kwargs)
    if isinstance(x, PackedSequence):
        x = x.data
    return tuple(x.shape) if x is not None else ()


def _is_inside(name: str, prefix: str) -> bool:
    """True if module ``name`` is a strict descendant of module ``prefix`` ("" is the root)."""
    return name != prefix and (prefix == "" or name.startswith(prefix + "."))


def _outermost_formula_modules(model: nn.Module) -> list[str]:
    whole: list[str] = []
    for name, module in model.named_modules():
        if not any(_is_inside(name, p) for p in whole) and _find_formula(module) is not None:
            whole.append(name)
    return whole


def _install_hooks(model: nn.Module, counter: _Counter, whole: list[str]) -> list[Any]:
    handles: list[Any] = []
    for name, module in model.named_modules():
        if any(_is_inside(name, p) for p in whole):
            continue  # costed by the enclosing formula
        formula = _find_formula(module)

        def pre_hook(mod, args, kwargs, _name=name, _formula=formula):
            counter.stack.append((_name, mod))
            counter.called.add(_name)
            if _formula is not None:
                counter.suppress += 1

        def post_hook(mod, args, kwargs, output, _name=name, _formula=formula):
            counter.stack.pop()
            if _formula is not None:
                counter.suppress -= 1
                macs = _formula(mod, args, kwargs, output, counter.config)
                counter.entry(_name, type(mod).__name__).macs += int(macs)
            extra = getattr(mod, "extra_macs", None)
            if callable(extra) and counter.suppress == 0:
                counter.entry(_name, type(mod).__name__).macs += int(
                    extra(_shape_of_first_tensor(args, kwargs))
                )

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True, always_call=True))
    return handles


def dummy_waveform(num_samples: int = 80000, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A reproducible white-noise waveform ``[batch, num_samples]`` (16 kHz, 5 s by default)."""
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, num_samples, generator=gen)


def example_args(num_samples: int, example_input: Any = None) -> tuple:
    """The positional arguments of one forward pass: ``example_input`` (a tensor or a tuple of arguments), or
    the :func:`dummy_waveform` of ``num_samples`` when it is None."""
    example = dummy_waveform(num_samples) if example_input is None else example_input
    return example if isinstance(example, tuple) else (example,)


def count_macs(
    model: nn.Module,
    num_samples: int = 80000,
    *,
    example_input: Any = None,
    fold_bn: bool = True,
) -> CostReport:
    """Count MACs and parameters of ``model`` for one forward pass (module docstring: conventions).

    Args:
        model: Any ``nn.Module``; evaluated in ``eval()`` mode (its mode is restored afterwards).
        num_samples: Length of the dummy waveform ``[1, num_samples]`` used when ``example_input`` is None.
        example_input: A tensor or a tuple of positional arguments, for models that do not take a waveform.
        fold_bn: Count BatchNorm as 0 MACs (folded into the previous conv/linear, as in deployment).

    Returns:
        A :class:`CostReport` for that input (for a batch of B inputs the MACs are for all B).
    """
    args = example_args(num_samples, example_input)
    counter = _Counter(_CountConfig(fold_bn=fold_bn))
    whole = _outermost_formula_modules(model)
    was_training = model.training
    handles = _install_hooks(model, counter, whole)
    try:
        model.eval()
        with torch.inference_mode(), _FunctionalCounter(counter):
            model(*args)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    breakdown = _finish_breakdown(model, counter, whole)
    return CostReport(
        macs=sum(b.macs for b in breakdown),
        params=count_params(model),
        breakdown=tuple(breakdown),
        unrecognized=tuple(_unrecognized(model, counter, whole)),
    )


def _finish_breakdown(model: nn.Module, counter: _Counter, whole: list[str]) -> list[ModuleCost]:
    modules = dict(model.named_modules())
    params_of: dict[str, int] = {}
    for name, module in modules.items():
        if any(_is_inside(name, p) for p in whole):
            continue
        n = sum(p.numel() for p in module.parameters(recurse=name in whole))
        if n:
            params_of[name] = n
    out: list[ModuleCost] = []
    listed: set[str] = set()
    for (name, type_name), e in counter.entries.items():
        params = 0
        if not type_name.startswith("fn:") and name not in listed:
            params = params_of.get(name, 0)
            listed.add(name)
        out.append(ModuleCost(name, type_name, e.macs, params))
    for name, n in params_of.items():
        if name not in listed:
            out.append(ModuleCost(name, type(modules[name]).__name__, 0, n))
    return out


def _unrecognized(model: nn.Module, counter: _Counter, whole: list[str]) -> Iterable[str]:
    """Called parametric leaves whose parameters did not enter any counted op."""
    with_functional_macs = {
        name for (name, kind), e in counter.entries.items() if kind.startswith("fn:") and e.macs
    }
    for name, module in model.named_modules():
        if name not in counter.called or name in whole or any(_is_inside(name, p) for p in whole):
            continue
        is_leaf = next(module.children(), None) is None
        has_params = next(module.parameters(recurse=False), None) is not None
        if is_leaf and has_params and not hasattr(module, "extra_macs") and name not in with_functional_macs:
            yield f"{name or '<root>'} ({type(module).__name__})"


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
