"""The bundled digits models (flowsolve.zoo): loading, conventions, fingerprints, sample quality."""

import ast
import pathlib

import pytest
import torch

import flowsolve
from flowsolve.core.fingerprint import model_fingerprint
from flowsolve.models import zoo

# Statistics of all 1797 images of sklearn.datasets.load_digits() scaled to [-1, 1]
# (pixel / 8 - 1), measured once so that this test does not need scikit-learn.
DIGITS_PIXEL_MEAN = -0.3895
DIGITS_PIXEL_STD = 0.7521
DIGITS_BACKGROUND_FRACTION = 0.525  # pixels below -0.75
DIGITS_INK_FRACTION = 0.190  # pixels above 0.5
DIGITS_MEAN_IMAGE = torch.tensor([
    [-1.00, -0.96, -0.35, 0.48, 0.48, -0.28, -0.83, -0.98],
    [-1.00, -0.75, 0.30, 0.50, 0.28, 0.02, -0.77, -0.99],
    [-1.00, -0.67, 0.24, -0.13, -0.11, -0.02, -0.78, -0.99],
    [-1.00, -0.69, 0.14, 0.10, 0.24, -0.06, -0.71, -1.00],
    [-1.00, -0.71, -0.04, 0.13, 0.29, 0.09, -0.64, -1.00],
    [-1.00, -0.80, -0.14, -0.10, -0.04, 0.03, -0.57, -1.00],
    [-1.00, -0.91, -0.06, 0.19, 0.18, 0.09, -0.53, -0.97],
    [-1.00, -0.97, -0.31, 0.51, 0.48, -0.15, -0.74, -0.95],
], dtype=torch.float64).reshape(64)

# model_fingerprint(load_model(name), (64,), torch.float32, "cpu") of the shipped weights.
# Retraining changes them (and invalidates stored ground truth keyed to them): update here.
SHIPPED_FINGERPRINTS = {
    "digits-fm-ot": "2cc5e4dd85a95921",
    "digits-fm-cs": "cc1e7aa7ae2dfd9d",
    "digits-eps-vp": "ebbe9f8d9d6c6fd5",  # the field past s = 1e-3 now denoises
}

SAMPLES = 256


@pytest.fixture(scope="module", params=zoo.DIGITS_MODEL_NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def field(name):
    return zoo.load_model(name)


@pytest.fixture(scope="module")
def samples(field):
    x0 = torch.randn(SAMPLES, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return flowsolve.RK4().sample(field, x0, nfe=100).double()


def test_model_names_and_factories():
    assert zoo.MODEL_NAMES == ("digits-fm-ot", "digits-fm-cs", "digits-eps-vp", "animals-fm-ot", "animals-eps-vp")
    factories = zoo.models()
    assert tuple(factories) == zoo.MODEL_NAMES
    assert all(callable(factory) for factory in factories.values())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown zoo model 'digits-ve'.*'digits-fm-ot'.*'digits-eps-vp'"):
        zoo.load_model("digits-ve")


def test_weights_are_packaged_float32_state_dicts(name):
    path = zoo.weights_path(name)
    assert path.is_file()
    with path.open("rb") as handle:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    assert all(tensor.dtype == torch.float32 for tensor in state.values())
    assert set(state) == set(zoo.new_network(name).state_dict())


def test_field_is_a_module_with_sample_shape(field):
    assert isinstance(field, torch.nn.Module)
    assert field.sample_shape == (64,)
    assert not any(parameter.requires_grad for parameter in field.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_velocity_is_finite_with_scalar_and_per_sample_time(field, t, dtype):
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        scalar = field(torch.tensor(t, dtype=dtype), x)
        per_sample = field(torch.full((5,), t, dtype=dtype), x)
    assert scalar.shape == x.shape and scalar.dtype == dtype
    assert torch.isfinite(scalar).all()
    torch.testing.assert_close(per_sample, scalar)


def test_per_sample_times_match_one_call_per_time(name):
    # In float64 (weights moved with .to) so that batch-size-dependent float32 round-off does not blur the check.
    field = zoo.load_model(name).to(torch.float64)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    times = torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=torch.float64)
    with torch.no_grad():
        batched = field(times, x)
        separate = torch.cat([field(times[i], x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, separate, rtol=1e-12, atol=1e-12)


def test_fingerprint_is_stable_and_distinct():
    prints = {}
    for name in zoo.DIGITS_MODEL_NAMES:
        first = model_fingerprint(zoo.load_model(name), (64,), torch.float32, "cpu")
        assert model_fingerprint(zoo.load_model(name), (64,), torch.float32, "cpu") == first
        prints[name] = first
    assert len(set(prints.values())) == len(prints)
    assert prints == SHIPPED_FINGERPRINTS, "shipped weights changed: update SHIPPED_FINGERPRINTS"


def test_sampling_is_deterministic(field, samples):
    x0 = torch.randn(SAMPLES, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        again = flowsolve.RK4().sample(field, x0, nfe=100).double()
    assert torch.equal(again, samples)


def test_sample_pixel_statistics_match_the_digits(samples):
    # With these samples the shipped models miss them by at most 0.001 (mean), 0.021 (std),
    # 0.012 (fractions) and 0.033 (mean image, per-pixel RMS).
    assert abs(float(samples.mean()) - DIGITS_PIXEL_MEAN) < 0.03
    assert abs(float(samples.std()) - DIGITS_PIXEL_STD) < 0.05
    assert abs(float((samples < -0.75).double().mean()) - DIGITS_BACKGROUND_FRACTION) < 0.04
    assert abs(float((samples > 0.5).double().mean()) - DIGITS_INK_FRACTION) < 0.04
    mean_image_error = (samples.mean(0) - DIGITS_MEAN_IMAGE).square().mean().sqrt()
    assert float(mean_image_error) < 0.06, "the average sample does not look like the average digit"
    # Pixels of real digits lie in [-1, 1]; the shipped models put 3-5 % of pixels past 1.1.
    # An undertrained model (a few hundred steps) puts 20 % or more there.
    assert float((samples.abs() > 1.1).double().mean()) < 0.1, "samples blurred past the pixel range [-1, 1]"
    assert float((samples.abs() > 1.5).double().mean()) < 0.01, "samples far outside the pixel range [-1, 1]"


def test_samples_are_diverse(samples):
    # Two real digits lie 0.76 apart on average (per-pixel RMS); a collapsed model gives ~0.
    distances = torch.cdist(samples, samples) / 8
    assert 0.65 < float(distances.sum() / (SAMPLES * (SAMPLES - 1))) < 0.9


def test_zoo_does_not_import_scikit_learn():
    package = pathlib.Path(zoo.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "sklearn" for n in names), f"{source.name} imports scikit-learn"


def test_public_names_resolve():
    for public in zoo.__all__:
        assert hasattr(zoo, public), public


def test_registered_through_the_models_hook():
    from flowsolve.plugins.registry import registry

    registered = registry().models()
    if "digits-fm-ot" not in registered:
        pytest.skip("flowsolve.plugins.builtin does not register flowsolve.zoo.models() yet")
    for name in zoo.DIGITS_MODEL_NAMES:
        assert model_fingerprint(registered[name](), (64,), torch.float32, "cpu") == model_fingerprint(
            zoo.load_model(name), (64,), torch.float32, "cpu"
        )
