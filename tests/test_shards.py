"""--shards K: one input prepped as K independent shard artifacts, read back as one data set that
equals a single-task prep of the same input (features, ids, counts, skips, input record)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from prep.features import open_features, sorted_by_feature_id
from prep.shards import Shard, merge_shards, prep_shard
from tasks import get_task
from tests.conftest import shared_data
from train.config import TrainConfig
from train.data import FeatureSet
from train.dist import single_process
from train.loop import train

SHARDS = 2


def gap_input(folder: Path) -> tuple[Path, dict]:
    """140 GAP rows: 3 chunks of the reader's 64 rows, so both shards have work."""
    lines = shared_data("gap/gap-development.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "gap-development.tsv"
    path.write_text("".join(lines[:141]), encoding="utf-8")
    return path, {}


def textclass_input(folder: Path) -> tuple[Path, dict]:
    """130 BBC articles (2 chunks once skips are out), one label left out of the label list: the reader skips those rows."""
    with shared_data("textclass/bbc-news/train.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for _, row in zip(range(130), reader)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path = folder / "bbc.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    labels = sorted({row["Category"] for row in rows})[1:]
    return path, {"text_column": "Text", "label_column": "Category", "labels": json.dumps(labels),
                  "max_seq_length": 64}


INPUTS = {"gap": gap_input, "textclass": textclass_input}


@pytest.fixture(scope="module", params=sorted(INPUTS))
def prepped(request, tmp_path_factory):
    """(task, single-prep folder, shard folders, set folder) for one task on a tiny input."""
    task = request.param
    root = tmp_path_factory.mktemp(f"shards-{task}")
    spec = get_task(task)
    path, values = INPUTS[task](root)
    config = spec.prep.make_config(**values)
    spec.prep.prepare(path, root / "single", None, config, nproc=1, mode="shards")
    shard_dirs = []
    for index in range(SHARDS):
        with prep_shard(index, SHARDS):
            spec.prep.prepare(path, root / f"shard{index}", None, config, nproc=1, mode="shards")
        shard_dirs.append(root / f"shard{index}")
    merge_shards(shard_dirs, root / "set")
    return task, root / "single", shard_dirs, root / "set"


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_the_set_equals_a_single_prep(prepped):
    task, single, shard_dirs, shard_set = prepped
    one, both = manifest(single), manifest(shard_set)
    shards = [manifest(folder)["shard"] for folder in shard_dirs]
    total = shards[0]["chunks_total"]
    assert total >= 2 and all(entry["chunks_total"] == total for entry in shards)
    assert [entry["chunks"] for entry in shards] == [[0, total // 2], [total // 2, total]]  # a part each
    assert all(manifest(folder)["counts"]["features_out"] > 0 for folder in shard_dirs)
    expected = sorted_by_feature_id(open_features(single))
    got = open_features(shard_set)
    assert got.num_rows == expected.num_rows > 0
    assert sorted_by_feature_id(got).equals(expected)
    assert got.column("feature_id").to_pylist() == list(range(got.num_rows))  # ids continue across the shards
    for key in ("input", "config", "tokenizer", "columns", "skipped", "skip_reasons", "dataset", "split"):
        assert both[key] == one[key], key
    counts = {key: value for key, value in one["counts"].items() if key != "id_wait_seconds"}
    assert {key: both["counts"][key] for key in counts} == counts
    if task == "textclass":
        assert one["counts"]["examples_skipped"] > 0  # the reader's skips, counted once


def test_training_reads_the_set_as_one_data_set(prepped, tmp_path, one_cpu_thread, tiny_encoder_dir):
    task, single, _, shard_set = prepped
    assert len(FeatureSet(shard_set, task)) == len(FeatureSet(single, task))
    tiny = tiny_encoder_dir
    losses = {}
    for name, folder in (("single", single), ("set", shard_set)):
        config = TrainConfig(task=task, features_dir=str(folder), run_dir=str(tmp_path / name), model_dir=str(tiny),
                             precision="fp32", global_batch_size=8, max_steps=3, length_bucketing=False,
                             log_every_n_steps=1, progress_bar=False, device="cpu")
        train(config, get_task(config.task).train, single_process("cpu"))
        losses[name] = torch.tensor([entry["loss"] for entry in
                                     json.loads((tmp_path / name / "metrics.json").read_text())["train_loss_history"]])
    torch.testing.assert_close(losses["set"], losses["single"])


def test_shards_that_do_not_belong_together_are_refused(prepped, tmp_path):
    _, single, shard_dirs, _ = prepped
    with pytest.raises(ValueError, match=r"shards \[\(1, 2\), \(0, 2\)\] \(index, count\) given; need \[\(0, 2\), \(1, 2\)\]"):
        merge_shards(list(reversed(shard_dirs)), tmp_path / "reversed")
    with pytest.raises(ValueError, match=r"need \[\(0, 1\)\]"):
        merge_shards(shard_dirs[:1], tmp_path / "half")
    with pytest.raises(ValueError, match="not a prep shard"):
        merge_shards([single, shard_dirs[1]], tmp_path / "mixed")
    other = tmp_path / "other"
    other.mkdir()
    for path in shard_dirs[1].iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    edited = manifest(other)
    edited["input"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="built from another input"):
        merge_shards([shard_dirs[0], other], tmp_path / "foreign")
    assert not any(path.exists() for path in (tmp_path / "reversed", tmp_path / "half", tmp_path / "mixed"))


@pytest.mark.fast
def test_shard_chunk_ranges_cover_every_chunk_once():
    for chunks in (0, 1, 2, 7, 64):
        for count in (1, 2, 3, 5):
            ranges = [Shard(index, count).chunk_range(chunks) for index in range(count)]
            assert [start for start, _ in ranges] == [0, *[stop for _, stop in ranges[:-1]]]
            assert ranges[-1][1] == chunks
    with pytest.raises(ValueError, match="need 0 <= shard < shards"):
        Shard(2, 2)


@pytest.mark.fast
def test_luigi_shard_parameters_are_checked(tmp_path):
    from pipeline.prep_tasks import FEATURES

    data = tmp_path / "gap-development.tsv"
    data.write_text("ID\tText\n")
    whole = FEATURES["gap"](input=str(data), shards=3)
    assert [task.shard for task in whole.requires()] == [0, 1, 2]
    names = {task.out_dir.name.rsplit("-", 1)[0] for task in whole.requires()}
    assert names == {f"gap-development-shard{index}of3" for index in range(3)}
    assert whole.out_dir.name.rsplit("-", 1)[0] == "gap-development"
    # one shard: the input only; an unsharded task keeps the folder name it had before --shards existed
    assert FEATURES["gap"](input=str(data), shards=3, shard=1).requires() == []
    plain = FEATURES["gap"](input=str(data))
    assert plain.out_dir == FEATURES["gap"](input=str(data), shards=1).out_dir != whole.out_dir
    with pytest.raises(ValueError, match=r"--shard 3 is not in 0..2"):
        FEATURES["gap"](input=str(data), shards=3, shard=3).requires()
    with pytest.raises(ValueError, match=r"--shards must be >= 1, got 0"):
        FEATURES["gap"](input=str(data), shards=0).requires()
