"""Run records (issue 37): a summary row says what it is in fields, and the reader of older run folders gives
rows written before the fields existed the same fields from their names."""

from __future__ import annotations

import json

import pytest

from reports import records

# main.py's rows of a grown run with --probe_bn and a final test, as written before the fields (name, fields)
OLDER_MAIN_ROWS = [
    ("member 0", {"role": "phase_end", "phase": None, "member": 0}),  # it ends member_0 and member_1
    ("member 1", {"role": "phase_end", "phase": "member_1", "member": 1}),
    ("grown at growth", {"role": "right_after", "operator": "mixturegrowth", "bn_recalibrated": False}),
    ("grown at growth, BN recalibrated", {"role": "right_after", "operator": "mixturegrowth", "bn_recalibrated": True}),
    ("widened (GradMax)", {"role": "right_after", "operator": "gradmax", "bn_recalibrated": False}),
    ("widened (Firefly), BN recalibrated", {"role": "right_after", "operator": "firefly", "bn_recalibrated": True}),
    ("widened (Net2Net)", {"role": "right_after", "operator": "net2net_widen", "bn_recalibrated": False}),
    ("grown final", {"role": "phase_end", "phase": "grown", "member": None}),
    ("plain final", {"role": "phase_end", "phase": "plain", "member": None}),
    ("grown final (test)", {"role": "final_test"}),
]
OLDER_FUSE_ROWS = [
    ("member 1", {"role": "member", "member": 1}),
    ("ensemble of 2", {"role": "ensemble"}),
    ("nt before fine-tuning", {"role": "before_finetuning"}),
    ("nt before fine-tuning, BN recalibrated", {"role": "before_finetuning", "bn_recalibrated": True}),
    ("best_member after fine-tuning", {"role": "after_finetuning"}),
]


@pytest.mark.parametrize("name, fields", OLDER_MAIN_ROWS, ids=[name for name, _ in OLDER_MAIN_ROWS])
def test_an_older_main_row_gets_its_fields_from_its_name(name, fields):
    assert records.older_main_fields(name, {"coefs_growing": "orthogonal"}) == fields


def test_random_growth_and_mixturegrowth_rows_shared_a_name_the_args_tell_them_apart():
    assert records.older_main_fields("grown at growth", {"coefs_growing": "random_blocks"})["operator"] == \
        "random_blocks"


@pytest.mark.parametrize("name, fields", OLDER_FUSE_ROWS, ids=[name for name, _ in OLDER_FUSE_ROWS])
def test_an_older_fuse_row_gets_its_fields_from_its_name(name, fields):
    assert records.older_fuse_fields(name) == fields


def test_a_row_with_fields_is_never_read_by_its_name(tmp_path):
    # a name that once meant "right after growth", on a row that says it is the final network: the fields win
    rows = [{"network": "grown at growth", "role": "phase_end", "phase": "grown", "member": None, "top1": 50.0}]
    run = records.main_run(str(tmp_path), {}, [{"epoch": 0, "val_top1": 1.0}], rows)
    assert run.right_after(bn_recalibrated=False) == [] and run.final.role == "phase_end"


def test_a_main_run_folder_reads_into_typed_records(tmp_path):
    epochs = [{"epoch": e, "phase": "grown", "val_top1": 50.0 + e, "train_flops_cumulative": 1e9 * (e + 1),
               "epoch_time": 2.0, "train_samples": 100} for e in range(2)]
    summary = [{"network": "member 0", "top1": 40.0, "params": 10, "flops": 1e6},
               {"network": "member 0", "top1": 41.0, "params": 11, "flops": 1e6},
               {"network": "grown at growth", "top1": 10.0, "analysis_flops": 0.0, "operator_seconds": 0.5},
               {"network": "grown at growth, BN recalibrated", "top1": 30.0},
               {"network": "grown final", "top1": 60.0, "split": "val", "params": 40, "flops": 4e6}]
    for name, content in (("args.json", {"coefs_growing": "zero"}), ("summary.json", summary),
                          ("sources.json", {"resume_member_0": "ab12"})):
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in epochs))
    run = records.read_main_run(str(tmp_path))
    assert run.member_row(0).params == 11  # the last row of member 0
    assert [row.top1 for row in run.right_after(bn_recalibrated=True)] == [30.0]
    assert run.final.top1 == 60.0 and run.curve == [50.0, 51.0] and run.wall_s == 4.0
    assert run.flops_curve == [1e9, 2e9] and run.sources == {"resume_member_0": "ab12"}
    assert sum(row.operator_seconds for row in run.summary) == 0.5


def test_a_fuse_run_finds_its_rows_by_role():
    rows = [{"network": "nt before fine-tuning", "val_top1": 20.0},
            {"network": "nt before fine-tuning, BN recalibrated", "val_top1": 40.0},
            {"network": "nt after fine-tuning", "val_top1": 80.0, "test_top1": 79.0}]
    run = records.fuse_run("run", [{"phase": "finetune", "train_samples": 64}, {"phase": "fused", "train_samples": 0}],
                           rows)
    assert run.row("before_finetuning").val_top1 == 20.0 and run.row("after_finetuning").test_top1 == 79.0
    assert run.finetune_images == 64
