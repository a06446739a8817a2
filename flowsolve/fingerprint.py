"""Fingerprints that tie stored ground truth and fitted solvers to one model."""

from __future__ import annotations

import hashlib

import torch


def model_fingerprint(model, sample_shape: tuple[int, ...], dtype: torch.dtype, device) -> str:
    """A short hash identifying ``model``.

    Uses, in order: ``model.fingerprint()`` if the model defines it; the parameters and
    buffers of a ``torch.nn.Module``; otherwise the model's outputs on a fixed probe (so two
    callables that compute different fields get different fingerprints).
    """
    digest = hashlib.sha256()
    custom = getattr(model, "fingerprint", None)
    if callable(custom):
        digest.update(str(custom()).encode())
    elif isinstance(model, torch.nn.Module):
        digest.update(type(model).__qualname__.encode())
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(_tensor_bytes(tensor))
    else:
        generator = torch.Generator().manual_seed(20231001)
        probe = torch.randn((2, *sample_shape), generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
        with torch.no_grad():
            for t in (0.25, 0.75):
                out = model(torch.tensor(t, dtype=dtype, device=device), probe)
                digest.update(_tensor_bytes(out.to(torch.float32)))
    return digest.hexdigest()[:16]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()[:16]


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    raw = tensor.reshape(-1).view(torch.uint8)  # reshape first: a 0-dim tensor cannot be viewed as bytes
    return str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode() + raw.numpy().tobytes()
