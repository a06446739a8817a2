"""Conditions per path: binding, classifier-free guidance, ground truth, stores and fits over labels.

The conditional model is exact: label ``k`` is one Gaussian component, the null label the whole
mixture, so every guided field is checked against the mixture flows evaluated directly.
"""

import pytest
import torch

import flowsolve
from flowsolve.models.conditioning import GuidanceScales, Joint, Labels, bind
from flowsolve.models.gaussian_mixture import ConditionalGaussianMixture, GaussianMixtureFlow
from flowsolve.training.ground_truth import solve_dense

CLASSES, DIM, NULL = 3, 4, 3
MIXTURE = GaussianMixtureFlow.random(dim=DIM, components=CLASSES, seed=3, spread=1.5)
PER_CLASS = [GaussianMixtureFlow(MIXTURE.means[k : k + 1], MIXTURE.stds[k : k + 1], torch.ones(1)) for k in range(CLASSES)]  # independent


class ExactConditionalNet(ConditionalGaussianMixture):
    """The exact conditional mixture, recording the batch size of every network call."""

    def __init__(self):
        super().__init__(MIXTURE)
        self.rows = []

    def forward(self, x, t, labels):
        self.rows.append(x.shape[0])
        return super().forward(x, t, labels)


def guided_field(weight=2.0, distribution=Labels(CLASSES)):
    net = ExactConditionalNet()
    guided = flowsolve.ClassifierFreeGuidance(net, weight, null_condition=torch.tensor([NULL]), distribution=distribution)
    return flowsolve.adapt(guided, "fm-ot"), guided, net


def expected_velocity(t, x, labels, weights):
    rows = [(1 + w) * PER_CLASS[k](t, x[i : i + 1]) - w * MIXTURE(t, x[i : i + 1])
            for i, (k, w) in enumerate(zip(labels.tolist(), weights.tolist()))]
    return torch.cat(rows)


def test_bound_guided_field_is_the_guided_mixture_per_sample():
    u, guided, net = guided_field(weight=2.0)
    x = torch.randn(5, DIM, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    t = torch.tensor(0.4, dtype=torch.float64)
    out = u.bind({"labels": labels})(t, x)
    torch.testing.assert_close(out, expected_velocity(t, x, labels, torch.full((5,), 2.0)), rtol=1e-12, atol=1e-12)
    weights = torch.tensor([0.0, 1.0, 3.5, -0.5, 2.0], dtype=torch.float64)
    out = u.bind({"labels": labels, "guidance": weights})(t, x)
    torch.testing.assert_close(out, expected_velocity(t, x, labels, weights), rtol=1e-12, atol=1e-12)
    assert guided.calls == 2 and net.rows == [10, 10]  # counts shared by the bound copies; one batched call each


def test_unbound_guided_model_is_the_unconditional_model():
    u, _, _ = guided_field(weight=2.0)
    x = torch.randn(3, DIM, dtype=torch.float64)
    t = torch.tensor(0.7, dtype=torch.float64)
    torch.testing.assert_close(u(t, x), MIXTURE(t, x), rtol=1e-12, atol=1e-12)
    assert u.condition_distribution == Labels(CLASSES)


def test_zero_guidance_skips_the_unconditional_pass():
    u, guided, net = guided_field(weight=0.0)
    x = torch.randn(4, DIM, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    out = u.bind({"labels": labels})(torch.tensor(0.3, dtype=torch.float64), x)
    torch.testing.assert_close(out, expected_velocity(torch.tensor(0.3), x, labels, torch.zeros(4)))
    assert net.rows == [4] and guided.forward_passes == 1 and guided.calls == 1


def test_bind_refuses_what_it_cannot_use():
    u, _, _ = guided_field()
    with pytest.raises(flowsolve.FlowsolveError, match="rows"):
        u.bind({"labels": torch.tensor([0, 1])})(torch.tensor(0.5), torch.randn(3, DIM))
    with pytest.raises(ValueError, match="takes the conditions"):
        u.bind({"prompt": torch.tensor([0, 1])})
    with pytest.raises(TypeError, match="takes no conditions"):
        bind(MIXTURE, {"labels": torch.tensor([0])})


def test_distributions_draw_reproducibly_and_describe_themselves():
    joint = Labels(CLASSES) & GuidanceScales(1.0, 3.0)
    assert isinstance(joint, Joint) and joint.keys == ("labels", "guidance")
    first, again = (joint.sample(400, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(first["labels"], again["labels"]) and torch.equal(first["guidance"], again["guidance"])
    assert set(first["labels"].tolist()) == set(range(CLASSES))
    assert 1.0 <= float(first["guidance"].min()) and float(first["guidance"].max()) <= 3.0
    assert joint.to_dict() == {"joint": [{"labels": CLASSES, "key": "labels"}, {"guidance": [1.0, 3.0], "key": "guidance"}]}
    with pytest.raises(ValueError):
        Labels(0)
    with pytest.raises(ValueError):
        GuidanceScales(2.0, 1.0)


def test_ground_truth_with_conditions_solves_each_path_with_its_own_field():
    u, _, _ = guided_field(weight=1.5)
    x0 = torch.randn(6, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    gt = flowsolve.ground_truth(u, x0, conditions={"labels": labels}, rtol=1e-9, atol=1e-9, batch_size=4)
    for i in range(6):  # independent: the guided mixture of that class alone, no conditions machinery
        field = lambda t, x, k=int(labels[i]): expected_velocity(t, x, torch.tensor([k]), torch.tensor([1.5]))
        _, states, _, _ = solve_dense(field, x0[i : i + 1], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(gt.x1[i], states[-1, 0], rtol=1e-6, atol=1e-6)
    assert torch.equal(gt.conditions["labels"], labels)
    assert torch.equal(gt.subset(torch.tensor([4, 1])).conditions["labels"], torch.tensor([1, 1]))


def test_store_draws_keeps_and_checks_conditions(tmp_path):
    u, _, _ = guided_field()
    store = flowsolve.GroundTruthStore(tmp_path / "s", u, dtype=torch.float64, shard_size=16)
    paths = store.load(32, progress=False)
    plain = flowsolve.GroundTruthStore(None, MIXTURE, dtype=torch.float64, shard_size=16).load(32, progress=False)
    assert torch.equal(paths.x0, plain.x0)  # the noise does not depend on the conditions
    labels = paths.conditions["labels"]
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(CLASSES))
    assert store.key["conditions"] == Labels(CLASSES).to_dict() and "conditions" not in plain_key(MIXTURE)
    again = flowsolve.GroundTruthStore(tmp_path / "s", u, dtype=torch.float64, shard_size=16).load(32, progress=False)
    assert torch.equal(again.conditions["labels"], labels) and torch.equal(again.x1, paths.x1)
    with pytest.raises(flowsolve.StoreMismatchError, match="conditions"):
        flowsolve.GroundTruthStore(tmp_path / "s", u, dtype=torch.float64, shard_size=16, conditions=Labels(2))
    # a damaged shard is regenerated with the same conditions
    shard = tmp_path / "s" / "shard-00001.pt"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.warns(UserWarning, match="regenerating"):
        repaired = flowsolve.GroundTruthStore(tmp_path / "s", u, dtype=torch.float64, shard_size=16).load(32, progress=False)
    assert torch.equal(repaired.conditions["labels"], labels)
    torch.testing.assert_close(repaired.x1, paths.x1)


def plain_key(model):
    return flowsolve.GroundTruthStore(None, model, dtype=torch.float64, shard_size=16).key


def test_fit_over_labels_improves_and_counts_guided_calls(tmp_path):
    u, guided, _ = guided_field(weight=2.0)
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    solver = family.fit(u, nfe=4, iterations=60, batch_size=8, lr=5e-3, train_trajectories=64, val_trajectories=32,
                        validate_every=20, progress=False, dtype=torch.float64)
    history = solver.metadata["history"]
    assert min(r["val_rmse"] for r in history) < 0.8 * history[0]["val_rmse"]
    # held-out paths with their own labels: the learned solver beats its start (Midpoint, uniform grid)
    held_out = flowsolve.GroundTruthStore(None, u, dtype=torch.float64, seed=5, shard_size=32).load(32, progress=False)
    learned = flowsolve.evaluate(solver, u, held_out)["rmse"]
    start = flowsolve.evaluate((flowsolve.Midpoint(), 4), u, held_out)["rmse"]
    assert learned < 0.8 * start
    before = guided.calls
    bound = held_out.subset(slice(0, 8))
    solver.sample(bound.field(u), bound.x0)
    assert guided.calls - before == 4  # NFE counts guided (batched) calls


def test_conditions_on_an_unconditional_model_are_refused():
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    with pytest.raises(TypeError, match="takes none"):
        family.fit(MIXTURE, nfe=4, conditions=Labels(2), iterations=1, progress=False)
    u, _, _ = guided_field()
    with pytest.raises(ValueError, match="conditions"):
        flowsolve.evaluate((flowsolve.Midpoint(), 4), u, torch.randn(4, DIM))
