"""The operator contract: every mid-run change of a network goes through one registry and one loop.

A test operator is registered here, without touching main.py, and a run applies it where the
plan says; BatchNorm recalibration and the validation split are checked on the same run.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn

from training import engine
import operators
import mixturegrowth.run
from models.saved import build_saved_network
from conftest import tiny_args
from mixturegrowth.plan import build_plan
from reports import records

SEEN = []


@operators.register("test_reset_classifier")
def reset_classifier(model: nn.Module, inputs: operators.OperatorInputs) -> operators.OperatorResult:
    """Replaces the network by a copy whose classifier is zero: every logit 0, so top-1 is class 0's share."""
    SEEN.append({"train_loader": inputs.train_loader is not None, "device": inputs.device})
    replaced = build_saved_network(vars(inputs.args), {"grown": True})
    replaced.load_state_dict(model.state_dict())
    with torch.no_grad():
        for coefficients in replaced.classifier.coefficients:
            coefficients.zero_()
    return operators.OperatorResult(replaced, keep_optimizer_state=True, label="classifier zeroed",
                                    message="test operator: classifier zeroed")


@pytest.fixture(scope="module")
def operator_run(tmp_path_factory):
    """The tiny run with the test operator before epoch 7, --recalibrate_bn 2 and --val_split 0.2."""
    args = tiny_args(tmp_path_factory.mktemp("operator"), "--recalibrate_bn", "2", "--val_split", "0.2")
    plan = build_plan(args)
    epochs = list(plan.epochs)
    epochs[7] = dataclasses.replace(epochs[7], operators=("test_reset_classifier",))
    SEEN.clear()
    result = mixturegrowth.run.run_training(args, dataclasses.replace(plan, epochs=tuple(epochs)))
    return args, result


def test_a_registered_operator_runs_where_the_plan_says_without_edits_to_main(operator_run):
    _, result = operator_run
    assert len(SEEN) == 1 and SEEN[0]["train_loader"]
    names = [row["network"] for row in result["summary"]]
    assert names.index("classifier zeroed") == names.index("grown at growth, BN recalibrated") + 1
    zeroed = result["summary"][names.index("classifier zeroed")]
    assert zeroed["epoch"] == 7
    # All logits equal: argmax picks class 0, so top-1 is class 0's share of the validation split.
    assert zeroed["top1"] == pytest.approx(100.0 * 28 / 287, abs=0.01)
    assert [e["operator"] for e in result["events"]] == ["mixturegrowth", "mixturegrowth", "test_reset_classifier",
                                                        "test_reset_classifier"]


def test_recalibrate_bn_adds_a_recalibrated_row_after_each_operator(operator_run):
    _, result = operator_run
    names = [row["network"] for row in result["summary"]]
    assert names[:4] == ["member 0", "member 1", "grown at growth", "grown at growth, BN recalibrated"]


def test_val_split_selects_on_validation_and_touches_the_test_set_once_at_the_end(operator_run):
    _, result = operator_run
    assert all("val_top1" in row and "test_top1" not in row for row in result["history"])
    assert [row["split"] for row in result["summary"]].count("test") == 1
    assert result["summary"][-1]["network"] == "grown final (test)"
    assert result["summary"][-1]["split"] == "test"


def test_every_summary_row_says_what_it_is_in_fields_and_the_older_reader_agrees(operator_run):
    args, result = operator_run
    fields = [(row["role"], row.get("operator"), row.get("bn_recalibrated"), row["phase"], row["member"])
              for row in result["summary"]]
    assert fields == [("phase_end", None, None, "member_0", 0), ("phase_end", None, None, "member_1", 1),
                      ("right_after", "mixturegrowth", False, "grown", None),
                      ("right_after", "mixturegrowth", True, "grown", None),
                      ("right_after", "test_reset_classifier", False, "grown", None),
                      ("right_after", "test_reset_classifier", True, "grown", None),
                      ("phase_end", None, None, "grown", None), ("final_test", None, None, "grown", None)]
    for row in result["summary"]:  # what a row written before the fields gets from its name (if it is known)
        older = records.older_main_fields(row["network"], vars(args))
        assert all(row[key] == value for key, value in older.items() if value is not None), row["network"]


def test_the_loop_names_no_method():
    source = inspect.getsource(mixturegrowth.run.run_training) + inspect.getsource(mixturegrowth.run.TrainingRun)
    for name in operators.names():
        assert name not in source
    for word in ("random_blocks", "net2net", "models.grow(", "coefs_growing"):
        assert word not in source


def test_every_operator_the_plan_can_name_is_registered(parse):
    flags = [("--coefs_growing", "random_blocks"), ("--copy_templates_and_bn_0_to_1",), ("--scale_templates_and_coefs",)]
    base = ["--growth_epochs", "2", "--ensemble_train_epochs", "2", "--epochs", "6"]
    named = set()
    for extra in flags:
        named.update(op for e in build_plan(parse(*base, *extra)) for op in e.operators)
    net2net = parse("--arch", "normalwrn", "--growth_epochs", "-1", "--epochs", "6", "--net2net_epoch", "3")
    named.update(op for e in build_plan(net2net) for op in e.operators)
    assert named == {"random_blocks", "mixturegrowth", "copy_member_0_to_1", "scale_member_0_to_1", "net2net_widen"}
    assert named <= set(operators.names())


class TwoBatchNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.BatchNorm2d(3)
        self.unused = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.used(x)


def test_recalibration_is_the_plain_mean_of_the_batch_statistics_and_leaves_unused_norms_alone():
    torch.manual_seed(0)
    batches = [(torch.randn(8, 3, 4, 4) * (i + 1) + i, torch.zeros(8, dtype=torch.long)) for i in range(3)]
    model = TwoBatchNorms().eval()
    with torch.no_grad():
        model.unused.running_mean.fill_(5.0)
    unused_before = {k: v.clone() for k, v in model.unused.state_dict().items()}
    rng_before = torch.get_rng_state()
    used = engine.recalibrate_batchnorm(model, batches, torch.device("cpu"), 2)
    assert used == 2
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b, _ in batches[:2]])
    variances = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b, _ in batches[:2]])
    torch.testing.assert_close(model.used.running_mean, means.mean(0))
    torch.testing.assert_close(model.used.running_var, variances.mean(0))
    for key, value in unused_before.items():
        assert torch.equal(model.unused.state_dict()[key], value)
    assert model.used.momentum == 0.1 and not model.training
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_accuracy_png_marks_each_right_after_point(tmp_path):
    from reports.plots import plot_accuracy

    rows = [{"epoch": e, "phase": "member_0" if e < 3 else "grown", "test_top1": 50.0 + e} for e in range(6)]
    plain = plot_accuracy(rows, tmp_path / "plain.png", growth_epochs=[3])
    marked = plot_accuracy(rows, tmp_path / "marked.png", growth_epochs=[3],
                           events=[{"epoch": 3, "label": "grown at growth", "top1": 12.0}])
    with open(plain, "rb") as a, open(marked, "rb") as b:
        assert a.read() != b.read()
