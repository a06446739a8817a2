"""Fingerprints that tie stored ground truth and fitted solvers to one model.

A fingerprint has two parts:

1. What the model declares. A model (module or plain callable) may define ``fingerprint()``
   returning a string; it is then used instead of inspecting the model, so it must change
   whenever the field ``u(t, x)`` changes: every weight (or a hash of them, e.g. with
   :func:`tensor_fingerprint`), the configuration (scheduler, time convention, guidance
   scale, conditions) and the code version. Without ``fingerprint()``, a
   ``torch.nn.Module`` contributes its module tree as printed (class names, configuration
   shown by ``extra_repr``), its ``state_dict`` and its non-persistent buffers, and the
   ``fingerprint()`` of the plain callables it wraps.
2. An output probe, always added where the model can take it: the field evaluated (without gradients) on a fixed noise
   batch of :data:`PROBE_BATCH` samples at the times :data:`PROBE_TIMES`, hashed bit for bit.
   It catches what no declaration shows: a network held in a global, a list, a bound method,
   a non-persistent buffer or a float attribute, and a ``fingerprint()`` that forgets the
   weights. The probe times avoid ``t = 0`` and ``t = 1``, where variance-preserving
   schedulers are singular. A model that raises on the probe batch (one that only takes a
   fixed batch, such as guidance with one condition per sample) keeps its declared part alone
   when it has one; a plain callable with nothing declared must take the probe.

Consequences: the field must be deterministic (the first probe is evaluated twice and must
repeat bit for bit: call ``model.eval()`` to turn off dropout), must return a
``torch.Tensor`` shaped like ``x`` of the same dtype, and its fingerprint depends on the dtype
and device it runs on (outputs are hashed exactly).
"""

from __future__ import annotations

import hashlib
import inspect

import torch

from flowsolve.core.errors import FlowsolveTypeError, FlowsolveValueError
from flowsolve.core.field import _check_output

PROBE_SEED = 20231001
PROBE_BATCH = 2
PROBE_TIMES = (0.25, 0.5, 0.75)  # inside (0, 1): valid for every scheduler, VP included
PROBE_EVALUATIONS = len(PROBE_TIMES) + 1  # the first time is evaluated twice (determinism check)


def model_fingerprint(model, sample_shape: tuple[int, ...], dtype: torch.dtype, device) -> str:
    """A short hash identifying the field ``model`` computes (see the module docstring).

    Raises:
        TypeError: the model returned something other than a tensor shaped like ``x`` of its dtype.
        ValueError: two identical calls of the model returned different outputs.
    """
    digest = hashlib.sha256()
    declared = _add_declared(digest, model)
    _add_probe(digest, model, tuple(sample_shape), dtype, torch.device(device), required=not declared)
    return digest.hexdigest()[:16]


def _add_declared(digest, model) -> bool:
    """What the model says about itself: its ``fingerprint()``, else a module's tree and state.
    Returns whether there was anything to add."""
    custom = getattr(model, "fingerprint", None)
    if callable(custom):
        digest.update(b"declared:" + str(custom()).encode())
        return True
    if isinstance(model, torch.nn.Module):
        _add_module_state(digest, model)
        return True
    return False


def _add_module_state(digest, module: torch.nn.Module) -> None:
    digest.update(type(module).__qualname__.encode())
    digest.update(repr(module).encode())
    state = module.state_dict()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    for name, tensor in module.named_buffers():
        if name not in state:  # non-persistent buffers still shape the output
            digest.update(b"buffer:" + name.encode())
            digest.update(_tensor_bytes(tensor))
    for inner in _wrapped_callables(module):
        inner_print = getattr(inner, "fingerprint", None)
        if callable(inner_print):
            digest.update(str(inner_print()).encode())


def _wrapped_callables(module: torch.nn.Module) -> list:
    """Plain (non-module) callables held by ``module`` or its submodules, e.g. an adapted lambda."""
    found = []
    for sub in module.modules():
        for value in vars(sub).values():
            if callable(value) and not isinstance(value, (torch.nn.Module, type)) and not inspect.ismethod(value):
                found.append(value)
    return found


def _add_probe(digest, model, sample_shape, dtype, device, required: bool) -> None:
    """Hash the outputs on a fixed probe; evaluate the first time twice to catch random outputs.

    A model that cannot be called on the probe batch (e.g. guidance with one condition per
    sample of a fixed batch) keeps only its declared part when it has one (``required`` false);
    a model with nothing declared must take the probe, or it has no identity at all.
    """
    generator = torch.Generator().manual_seed(PROBE_SEED)
    x = torch.randn((PROBE_BATCH, *sample_shape), generator=generator, dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    with torch.no_grad():
        try:
            first = _call(model, PROBE_TIMES[0], x)
        except Exception:
            if required:
                raise
            digest.update(b"probe:unavailable")
            return
        outputs = [_checked(first, PROBE_TIMES[0], x)] + [_probe_output(model, t, x) for t in PROBE_TIMES[1:]]
        repeated = _probe_output(model, PROBE_TIMES[0], x)
    if _tensor_bytes(repeated) != _tensor_bytes(outputs[0]):
        difference = float((repeated.double() - outputs[0].double()).abs().nan_to_num(float("inf")).max())
        raise FlowsolveValueError(
            f"the model's outputs differ between two identical calls u(t={PROBE_TIMES[0]}, x) "
            f"(by up to {difference:.3g}); "
            "ground truth and fingerprints need a deterministic field: call model.eval() to turn off dropout, and "
            "torch.use_deterministic_algorithms(True) for nondeterministic GPU kernels"
        )
    for out in outputs:
        digest.update(_tensor_bytes(out))


def _probe_output(model, t: float, x: torch.Tensor) -> torch.Tensor:
    return _checked(_call(model, t, x), t, x)


def _call(model, t: float, x: torch.Tensor):
    try:
        return model(torch.tensor(t, dtype=x.dtype, device=x.device), x)
    except Exception as error:
        if hasattr(error, "add_note"):  # Python >= 3.11: say which call failed, keep the type
            error.add_note(f"raised by the model while its fingerprint was taken (probe at t = {t}): u(t, x) with a "
                           f"0-dim t and x of shape {tuple(x.shape)}, {x.dtype}, on {x.device}")
        raise


def _checked(out, t: float, x: torch.Tensor) -> torch.Tensor:
    """``out`` if it is a tensor shaped like ``x`` of its dtype (else a clear error)."""
    where = f"while its fingerprint was taken (probe at t = {t})"
    if not isinstance(out, torch.Tensor):
        kind = type(out)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise FlowsolveTypeError(
            f"the velocity field returned {name} {where}; a velocity field must return a torch.Tensor shaped like x "
            f"(same dtype and device), e.g. torch.as_tensor(result, dtype=x.dtype, device=x.device)"
        )
    _check_output(out, x, where)
    return out


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()[:16]


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    raw = tensor.reshape(-1).view(torch.uint8)  # reshape first: a 0-dim tensor cannot be viewed as bytes
    return str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode() + raw.numpy().tobytes()
