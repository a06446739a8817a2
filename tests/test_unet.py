"""The class-conditional U-Net of the animal-mnist zoo models (flowsolve/models/zoo/unet.py)."""

import pytest
import torch

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.models.zoo.unet import NULL_LABEL, ConditionalUNet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = ConditionalUNet()
    # the output convolutions start at zero; perturb them so outputs and gradients are informative
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.abs().sum():
                parameter.normal_(0, 0.02)
    return model


def test_parameter_count_in_range(net):
    count = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= count <= 4_000_000, count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_and_dtype_follow_input(net, dtype):
    x = torch.randn(3, 1, 28, 28, dtype=dtype)
    with torch.no_grad():
        out = net(x, torch.rand(3, dtype=dtype), torch.tensor([0, 5, 9]))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()


def test_zero_dim_time_and_label_broadcast(net):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        shared = net(x, torch.tensor(0.3), torch.tensor(4))
        per_sample = net(x, torch.full((2,), 0.3), torch.tensor([4, 4]))
    torch.testing.assert_close(shared, per_sample)


def test_null_label_works_and_labels_matter(net):
    x = torch.randn(2, 1, 28, 28)
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        null = net(x, t, torch.full((2,), NULL_LABEL))
        labelled = net(x, t, torch.tensor([1, 1]))
    assert torch.isfinite(null).all()
    assert not torch.equal(null, labelled)
    with pytest.raises(IndexError):
        net(x, t, torch.full((2,), NULL_LABEL + 1))


def test_bad_inputs_are_refused(net):
    with pytest.raises(FlowsolveValueError):
        net(torch.zeros(2, 28, 28), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(FlowsolveValueError):
        net(torch.zeros(2, 1, 28, 28), torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(FlowsolveValueError):
        net(torch.zeros(2, 1, 28, 28), torch.zeros(2), torch.zeros(2))


def test_gradients_reach_every_parameter(net):
    x = torch.randn(2, 1, 28, 28)
    net.zero_grad(set_to_none=True)
    loss = net(x, torch.tensor([0.2, 0.8]), torch.tensor([3, NULL_LABEL])).square().mean()
    loss.backward()
    unused = {"label_embedding.weight"}  # only the rows of the labels used get gradients
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        if name not in unused:
            assert parameter.grad.abs().sum() > 0, name
    rows = net.label_embedding.weight.grad.abs().sum(dim=1)
    assert rows[3] > 0 and rows[NULL_LABEL] > 0 and rows[0] == 0
    net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("variant", ["animals-fm-ot", "animals-eps-vp"])
def test_shipped_animal_weights_fit_the_network(variant):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from importlib.resources import files

    path = files("flowsolve.models.zoo").joinpath("weights").joinpath(f"{variant}.safetensors")
    state = safetensors_torch.load(path.read_bytes())
    net = ConditionalUNet()
    net.load_state_dict(state, strict=True)
    x = torch.zeros(2, 1, 28, 28)
    assert torch.isfinite(net(x, torch.tensor([0.2, 0.8]), torch.tensor([3, 10]))).all()
