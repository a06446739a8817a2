"""Model fingerprints see the weights however a model holds its network, and refuse bad outputs."""

import numpy as np
import pytest
import torch

import flowsolve
from flowsolve.core.fingerprint import model_fingerprint

ARGS = ((2,), torch.float32, torch.device("cpu"))


def network():
    return torch.nn.Linear(2, 2)


GLOBAL_NETWORK = network()


class UsesGlobal(torch.nn.Module):
    def forward(self, t, x):
        return GLOBAL_NETWORK(x)


class UsesList(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.nets = [net]  # a list hides the module from .modules() and state_dict()

    def forward(self, t, x):
        return self.nets[0](x)


class UsesBoundMethod(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.apply_net = net.forward

    def forward(self, t, x):
        return self.apply_net(x)


class UsesNonPersistentBuffer(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.register_buffer("weight", net.weight.detach().clone(), persistent=False)

    def forward(self, t, x):
        return x @ self.weight.T


class UsesFloatAttribute(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = 0.5

    def forward(self, t, x):
        return self.scale * x


def hidden_global():
    def change():
        with torch.no_grad():
            GLOBAL_NETWORK.weight.add_(0.125)

    return UsesGlobal(), change


def hidden_in_list():
    net = network()
    return UsesList(net), lambda: torch.nn.init.constant_(net.weight, 0.3)


def hidden_behind_bound_method():
    net = network()
    return UsesBoundMethod(net), lambda: torch.nn.init.constant_(net.weight, 0.3)


def hidden_in_non_persistent_buffer():
    model = UsesNonPersistentBuffer(network())
    return model, lambda: model.weight.mul_(2.0)


def hidden_in_float_attribute():
    model = UsesFloatAttribute()
    return model, lambda: setattr(model, "scale", 0.75)


@pytest.mark.parametrize(
    "make",
    [hidden_global, hidden_in_list, hidden_behind_bound_method, hidden_in_non_persistent_buffer,
     hidden_in_float_attribute],
)
def test_fingerprint_changes_when_hidden_weights_change(make):
    model, change_weights = make()
    before = model_fingerprint(model, *ARGS)
    assert model_fingerprint(model, *ARGS) == before  # stable while nothing changes
    with torch.no_grad():
        change_weights()
    assert model_fingerprint(model, *ARGS) != before


def test_a_declared_fingerprint_is_completed_by_the_output_probe():
    net = network()
    seen = []

    class Declares:
        """Declares a fingerprint that forgets the weights of its network."""

        def fingerprint(self):
            return "my-model-v1"

        def __call__(self, t, x):
            seen.append((float(t), x.shape[0]))
            return net(x)

    model = Declares()
    before = model_fingerprint(model, *ARGS)
    torch.nn.init.constant_(net.weight, 0.3)
    assert model_fingerprint(model, *ARGS) != before
    # The probe is cheap, and its times are valid for every scheduler (VP is singular at 0 and 1).
    probes = seen[: len(seen) // 2]
    assert len(probes) <= 4 and all(batch <= 2 for _, batch in probes)
    assert all(0.0 < t < 1.0 for t, _ in seen)


@pytest.mark.parametrize("as_module", [False, True])
def test_a_model_returning_numpy_is_a_clear_error(as_module):
    def numpy_field(t, x):
        return -x.numpy()

    class NumpyModule(torch.nn.Module):
        def forward(self, t, x):
            return numpy_field(t, x)

    model = NumpyModule() if as_module else numpy_field
    with pytest.raises(TypeError, match=r"returned numpy\.ndarray .*must return a torch\.Tensor shaped like x"):
        model_fingerprint(model, *ARGS)
    assert isinstance(numpy_field(None, torch.zeros(1, 2)), np.ndarray)


def test_a_model_with_random_outputs_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Dropout(0.5))  # left in training mode
    args = ((64,), torch.float32, torch.device("cpu"))  # 128 dropout draws: two equal masks are all but impossible
    with pytest.raises(ValueError, match=r"differ between two identical calls.*eval\(\)"):
        model_fingerprint(lambda t, x: model(x), *args)
    model.eval()
    assert model_fingerprint(lambda t, x: model(x), *args) == model_fingerprint(lambda t, x: model(x), *args)


def test_a_model_that_only_takes_its_own_batch_keeps_its_declared_fingerprint():
    # Guidance with one condition per sample of a batch of 8 cannot take the 2-sample probe.
    model = lambda x, t, c: x * c.reshape(-1, 1)  # noqa: E731
    def field(scale):
        return flowsolve.adapt(flowsolve.ClassifierFreeGuidance(model, scale, torch.arange(8.0), torch.ones(8)), "fm-ot")
    prints = [model_fingerprint(field(scale), (4,), torch.float32, "cpu") for scale in (1.0, 1.0, 2.0)]
    assert prints[0] == prints[1] != prints[2]
    with pytest.raises(ValueError, match="condition has 8 rows"):  # nothing declared: the probe is required
        model_fingerprint(lambda t, x: field(1.0)(t, x), (4,), torch.float32, "cpu")
