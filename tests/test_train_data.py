"""train.data and train.config: collate, batch plans, bucketing, config derivations (no model)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from prep.features import attention_mask, pad_rows
from tasks import get_task
from train.config import TrainConfig
from tasks.gap.model import collate_gap
from tasks.squad.model import collate_squad
from train.data import FeatureSet, eval_batches, plan_epoch
from train.testing import write_feature_dir
from tasks.gap.model import synthetic_gap_table
from tasks.squad.model import synthetic_squad_table

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def gap_dir(tmp_path_factory):
    return write_feature_dir(tmp_path_factory.mktemp("gap"), synthetic_gap_table(203, seed=3), "gap", "train", 64, shards=3)


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    return write_feature_dir(tmp_path_factory.mktemp("squad"), synthetic_squad_table(64), "squad", "train", 128)


def test_collate_squad_pads_like_prep_pad_rows(squad_dir):
    dataset = FeatureSet(squad_dir, "squad")
    rows = dataset.__getitems__([5, 0, 33, 63, 17])
    batch = collate_squad(rows, pad_id=0, pad_to_multiple_of=8)
    ids = rows.column("input_ids").to_pylist()
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width - 8 < max(map(len, ids)) <= width
    np.testing.assert_array_equal(batch["input_ids"].numpy(), pad_rows(ids, width))
    np.testing.assert_array_equal(batch["attention_mask"].numpy(), attention_mask(ids, width))
    np.testing.assert_array_equal(batch["token_type_ids"].numpy(), pad_rows(rows.column("token_type_ids").to_pylist(), width))
    assert batch["start_positions"].tolist() == rows.column("start_positions").to_pylist()
    assert batch["feature_id"].tolist() == [5, 0, 33, 63, 17]


def test_collate_gap_columns(gap_dir):
    dataset = FeatureSet(gap_dir, "gap")
    rows = dataset.__getitems__([200, 1, 70])  # spans three shards
    batch = collate_gap(rows)
    ids = rows.column("input_ids").to_pylist()
    np.testing.assert_array_equal(batch["input_ids"].numpy(), pad_rows(ids, max(map(len, ids))))
    np.testing.assert_array_equal(batch["segment_ids"].numpy(), pad_rows(rows.column("segment_ids").to_pylist(), max(map(len, ids))))
    for name in ("p_start", "b_end", "label"):
        assert batch[name].tolist() == rows.column(name).to_pylist()
    assert "token_type_ids" not in batch


def test_feature_set_checks_task_and_pickles_without_data(gap_dir):
    with pytest.raises(ValueError, match="holds 'gap' features"):
        FeatureSet(gap_dir, "squad")
    dataset = FeatureSet(gap_dir, "gap")
    _ = dataset.table
    blob = pickle.dumps(dataset)
    assert len(blob) < 1000  # the path, not the table
    again = pickle.loads(blob)
    assert len(again) == 203 and again.max_seq_length == 64


def _plan(dataset, world_size, rank, micro, lengths=None, epoch=0, global_batch=16):
    accum = global_batch // (micro * world_size)
    return plan_epoch(dataset, epoch=epoch, seed=7, rank=rank, world_size=world_size, global_batch_size=global_batch,
                      micro_batch_size=micro, accumulation_steps=accum, lengths=lengths, bucket_window_steps=4)


def _steps(plan, accum):
    return [sorted(sum(plan[i : i + accum], [])) for i in range(0, len(plan), accum)]


def test_plan_covers_the_same_global_batches_at_any_world_size(gap_dir):
    dataset = FeatureSet(gap_dir, "gap")
    one = _steps(_plan(dataset, 1, 0, micro=4), accum=4)
    assert len(one) == 203 // 16
    for world_size, micro in ((2, 4), (4, 2), (2, 8)):
        accum = 16 // (micro * world_size)
        per_rank = [_steps(_plan(dataset, world_size, r, micro), accum) for r in range(world_size)]
        assert {len(p) for p in per_rank} == {len(one)}
        merged = [sorted(sum((p[s] for p in per_rank), [])) for s in range(len(one))]
        assert merged == one
    flat = sum(one, [])
    assert len(set(flat)) == len(flat)  # no row twice in an epoch (no sampler padding used)
    assert _steps(_plan(dataset, 1, 0, micro=4, epoch=1), 4) != one  # set_epoch reshuffles


def test_bucketing_keeps_ranks_in_step_and_cuts_padding(gap_dir):
    dataset = FeatureSet(gap_dir, "gap")
    lengths = dataset.lengths()
    plans = [_plan(dataset, 2, r, micro=4, lengths=lengths) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == (203 // 16) * 2
    rows = sorted(sum(plans[0] + plans[1], []))
    plain = sorted(sum(_plan(dataset, 2, 0, 4) + _plan(dataset, 2, 1, 4), []))
    assert rows == plain  # same rows in the epoch, only grouped differently

    def padded(plan):
        return sum(len(b) * lengths[b].max() for b in plan)

    assert padded(plans[0]) < padded(_plan(dataset, 2, 0, 4))
    assert _plan(dataset, 2, 0, 4, lengths=lengths) == plans[0]  # a pure function: resume can replay it


def test_eval_batches_cover_each_row_once(gap_dir):
    dataset = FeatureSet(gap_dir, "gap")
    seen = sum((sum(eval_batches(dataset, 8, r, 3), []) for r in range(3)), [])
    assert sorted(seen) == list(range(203))


def test_train_config_derives_accumulation_from_global_batch():
    base = dict(task="gap", features_dir="f", run_dir="o", model_dir="m")
    assert TrainConfig(**base, global_batch_size=32, world_size=1).accumulation_steps(1) == 1
    assert TrainConfig(**base, global_batch_size=32, per_device_batch_size=8, world_size=2).accumulation_steps(1) == 2
    assert TrainConfig(**base, global_batch_size=128, world_size=2).micro_batch_size(1) == 32
    # a RACE row holds 4 sequences: the default forward is capped at 8 questions, 32 sequences
    race = dict(base, task="race", head="mc")
    assert TrainConfig(**race, global_batch_size=16).micro_batch_size(4) == 8
    assert TrainConfig(**race, global_batch_size=16).accumulation_steps(4) == 2
    assert TrainConfig(**race, global_batch_size=12).micro_batch_size(4) == 6
    assert TrainConfig(**race, global_batch_size=16, per_device_batch_size=4).micro_batch_size(4) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        TrainConfig(**base, global_batch_size=32, per_device_batch_size=6, world_size=2)
    with pytest.raises(ValueError, match="head"):  # the task's heads: checked where the entry point resolves it
        TrainConfig(**base, head="span").for_task(get_task("gap").train)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(**base, precision="fp8")
    config = TrainConfig(**base)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_feature_folders_open_with_datasets(gap_dir):
    from prep.features import open_features, to_hf_dataset

    dataset = to_hf_dataset(gap_dir)
    table = open_features(gap_dir)
    assert len(dataset) == table.num_rows == 203 and dataset.column_names == table.column_names
    assert dataset[5]["input_ids"] == table.column("input_ids")[5].as_py()
    assert dataset.with_format("torch")[0]["label"].item() == table.column("label")[0].as_py()
