"""A refactoring changes no artifact name and no training step: checked against tests/golden/,
recorded by ``python -m tests.parity --record`` before the change (see tests/parity.py)."""

from __future__ import annotations

import json

import pytest
import torch

from tests import parity
from tests.conftest import shared_data

pytestmark = pytest.mark.fast


def test_every_published_artifact_keeps_its_name():
    """Each command's DAG writes the same folders as before, task for task (compared as the list of
    every task's outputs: a scheduler id may change with a class's name, a folder's name may not)."""
    shared_data("gap/gap-development.tsv")
    shared_data("textclass/bbc-news/train.csv")
    recorded = json.loads(parity.NAMES_FILE.read_text())
    found = parity.artifact_names()
    assert sorted(found) == sorted(recorded)
    for command in recorded:
        before, now = parity.output_lists(recorded[command]), parity.output_lists(found[command])
        assert now == before, (f"{command}: outputs only before: {sorted(set(before) - set(now))}; "
                               f"only now: {sorted(set(now) - set(before))}")


@pytest.mark.usefixtures("one_cpu_thread")
def test_fixed_seed_losses_match_the_recorded_ones():
    """Per-step training losses, held-out figures, selection and calibration of each task. Recorded
    on one CPU; another vector width sums in another order, hence the tolerance (measured identical
    where they were recorded)."""
    recorded = json.loads(parity.LOSSES_FILE.read_text())
    found = parity.training_losses()
    assert sorted(found) == sorted(recorded)
    for task, want in recorded.items():
        got = found[task]
        torch.testing.assert_close(torch.tensor(got["train"]), torch.tensor(want["train"]), rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{task} training losses: {m}")
        assert [e["epoch"] for e in got["eval"]] == [e["epoch"] for e in want["eval"]]
        torch.testing.assert_close(torch.tensor([e["eval_loss"] for e in got["eval"]]),
                                   torch.tensor([e["eval_loss"] for e in want["eval"]]), rtol=1e-4, atol=1e-5)
        assert (got["selected"] or {}).get("epoch") == (want["selected"] or {}).get("epoch"), task
        assert (got["calibration"] is None) == (want["calibration"] is None), task
        if want["calibration"]:
            assert got["calibration"]["eval_loss_after"] == pytest.approx(want["calibration"]["eval_loss_after"],
                                                                          rel=1e-3)
