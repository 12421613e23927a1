"""Models by Hugging Face Hub id (prep.models), against a Hub on the loopback address (tests/hub_server.py).

The packaged MiniLM's folder is served as ``test-org/minilm`` (branch ``main`` and tag ``v1`` at one
commit). Each scenario runs in a fresh process, as a user's command does: huggingface_hub reads
HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported. Nothing here reaches any host but 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "test-org/minilm"
FIRST, SECOND = "1f" * 20, "2e" * 20  # commits
# What an encoder needs of the MiniLM folder (prep.models.HUB_FILES): no README, no sentence-transformers
# files, nothing from its 1_Pooling/ sub-folder.
ENCODER_FILES = ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.txt"]

_RESOLVE = ("import json, sys; from prep.models import hub_source, resolve_model; "
            "folder = resolve_model(sys.argv[1]); print(json.dumps({'folder': str(folder), 'source': hub_source(folder)}))")
_NAMES = ("import json, sys; from pipeline import FineTuned; "
          "tasks = {ref: FineTuned(task='gap', features_dir=sys.argv[1], model_dir=ref) for ref in sys.argv[2:]}; "
          "print(json.dumps({ref: [t.model_dir, t.out_dir.name] for ref, t in tasks.items()}))")


@pytest.fixture()
def hub(tokenizer_dir):
    with HubServer(tokenizer_dir, REPO_ID, {"main": FIRST, "v1": FIRST}) as server:
        yield server


def hub_env(hub: HubServer, hf_home: Path, offline: bool = False) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("HF_")}
    return {**env, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def python(args: list[str], env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=600)


def resolve(ref: str, env: dict) -> dict:
    done = python(["-c", _RESOLVE, ref], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def resolve_error(ref: str, env: dict) -> str:
    """The one-line error ``python -m train`` prints for ``ref``, an entry point's resolving of it."""
    done = python(["-m", "train", "--task", "gap", "--features", "f", "--out", "o", "--model", ref], env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.fast
def test_first_use_downloads_then_the_cache_serves(hub, tokenizer_dir, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    first = resolve(REPO_ID, env)
    asked = hub.take_requests()
    folder = Path(first["folder"])
    assert folder.name == FIRST and folder.is_relative_to(tmp_path / "hf")
    assert sorted(path.name for path in folder.iterdir()) == ENCODER_FILES
    assert all((folder / name).read_bytes() == (tokenizer_dir / name).read_bytes() for name in ENCODER_FILES)
    assert first["source"] == {"hub_id": REPO_ID, "revision": "main", "commit": FIRST}
    # The revision, the file listing, then a HEAD and a GET per file.
    assert asked[:2] == [("GET", f"/api/models/{REPO_ID}/revision/main"), ("GET", f"/api/models/{REPO_ID}/tree/{FIRST}")]
    assert sorted(asked[2:]) == sorted((method, f"/{REPO_ID}/resolve/{FIRST}/{name}")
                                       for name in ENCODER_FILES for method in ("GET", "HEAD"))

    # Again: an unpinned id asks which commit main is now (so a moved branch is seen), and nothing else.
    assert resolve(REPO_ID, env) == first
    assert hub.take_requests() == [("GET", f"/api/models/{REPO_ID}/revision/main")]
    # Pinned to the commit: no request at all.
    assert resolve(f"{REPO_ID}@{FIRST}", env)["folder"] == first["folder"]
    assert hub.take_requests() == []
    # HF_HUB_OFFLINE=1: the cache alone, the same folder.
    offline = hub_env(hub, tmp_path / "hf", offline=True)
    assert resolve(REPO_ID, offline) == first
    assert hub.take_requests() == []


@pytest.mark.fast
def test_an_id_that_cannot_be_had_is_one_line_naming_it(hub, tmp_path):
    offline = resolve_error(REPO_ID, hub_env(hub, tmp_path / "empty", offline=True))
    assert offline.startswith(f"python -m train: error: {REPO_ID}: ") and "HF_HUB_OFFLINE=1" in offline
    assert hub.take_requests() == []
    unknown = resolve_error("test-org/nothing", hub_env(hub, tmp_path / "hf"))
    assert "test-org/nothing: no such folder, and no model 'test-org/nothing' on the Hub" in unknown
    missing = resolve_error(f"{REPO_ID}@v9", hub_env(hub, tmp_path / "hf"))
    assert f"{REPO_ID}@v9: the Hub ({hub.endpoint}) has {REPO_ID} but no revision 'v9'" in missing
    assert hub.take_requests() == [("GET", "/api/models/test-org/nothing/revision/main"),
                                   ("GET", f"/api/models/{REPO_ID}/revision/v9")]
    assert not (tmp_path / "hf" / "hub" / "models--test-org--minilm" / "snapshots").exists()
    # A path that exists wins, whatever it looks like; one that is no Hub id is a plain error.
    (tmp_path / "test-org" / "minilm").mkdir(parents=True)
    here = hub_env(hub, tmp_path / "hf")
    assert python(["-c", _RESOLVE, REPO_ID], here, cwd=tmp_path).stdout.startswith('{"folder": "test-org/minilm"')
    assert "no such folder (a model is a local folder or" in resolve_error("./no/such/model", here)
    assert hub.take_requests() == []


@pytest.mark.fast
def test_run_names_record_the_commit_a_branch_moves_and_a_pin_stays(hub, tmp_path):
    """The Luigi parameter pins an id to its commit: a moved branch gives a new run folder name, a tag or
    commit keeps its own; the id's spellings that name one commit name one folder."""
    env = {**hub_env(hub, tmp_path / "hf"), "LUIGI_CONFIG_PATH": str(REPO / "luigi.offline.cfg")}
    refs = [REPO_ID, f"{REPO_ID}@v1", f"{REPO_ID}@{FIRST}"]

    def names() -> dict:
        done = python(["-c", _NAMES, str(tmp_path / "features"), *refs], env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    before = names()
    assert {model for model, _ in before.values()} == {f"{REPO_ID}@{FIRST}"}
    assert len({name for _, name in before.values()}) == 1
    hub.move("main", SECOND)
    after = names()
    assert after[REPO_ID][0] == f"{REPO_ID}@{SECOND}" and after[REPO_ID][1] != before[REPO_ID][1]
    assert after[f"{REPO_ID}@v1"] == before[f"{REPO_ID}@v1"]
    assert after[f"{REPO_ID}@{FIRST}"] == before[f"{REPO_ID}@{FIRST}"]


def test_features_and_a_fine_tune_from_an_id_equal_those_from_the_folder(hub, tokenizer_dir, tmp_path):
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from train.data import FeatureSet

    data = tmp_path / "texts.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(24):
            writer.writerow([f"review {i}: the film was {'wonderful and moving' if i % 2 else 'dull and far too long'}",
                             "pos" if i % 2 else "neg"])
    env = hub_env(hub, tmp_path / "hf")
    runs = {}
    # The Luigi path hands the trainer the id pinned to its commit; python -m prep gets it as typed.
    for name, prep_model, train_model in (("id", REPO_ID, f"{REPO_ID}@{FIRST}"),
                                          ("folder", str(tokenizer_dir), str(tokenizer_dir))):
        features, run = tmp_path / f"features-{name}", tmp_path / f"run-{name}"
        done = python(["-m", "prep", "textclass", str(data), str(features), "--model", prep_model, "--nproc", "1",
                       "--max-seq-length", "32", "--quiet"], env)
        assert done.returncode == 0, done.stderr
        done = python(["-m", "train", "--task", "textclass", "--features", str(features), "--out", str(run),
                       "--model", train_model, "--max-steps", "2", "--global-batch-size", "8", "--precision", "fp32",
                       "--device", "cpu", "--log-every-n-steps", "1", "--save-every-n-steps", "0",
                       "--no-progress-bar"], env)
        assert done.returncode == 0, done.stderr
        runs[name] = (features, run)

    (id_features, id_run), (folder_features, folder_run) = runs["id"], runs["folder"]
    hub_table, folder_table = FeatureSet(id_features).table, FeatureSet(folder_features).table
    assert hub_table.column_names == folder_table.column_names
    for column in hub_table.column_names:
        assert hub_table.column(column).equals(folder_table.column(column)), column
    source = {"hub_id": REPO_ID, "revision": "main", "commit": FIRST}
    assert json.loads((id_features / "manifest.json").read_text())["tokenizer"]["hub"] == source
    assert "hub" not in json.loads((folder_features / "manifest.json").read_text())["tokenizer"]

    losses = {name: [entry["loss"] for entry in json.loads((run / "metrics.json").read_text())["train_loss_history"]]
              for name, (_, run) in runs.items()}
    assert len(losses["id"]) == 2
    torch.testing.assert_close(torch.tensor(losses["id"]), torch.tensor(losses["folder"]), rtol=0, atol=0)
    heads = [load_file(str(run / "head.safetensors")) for run in (id_run, folder_run)]
    assert all(np.array_equal(heads[0][key].numpy(), heads[1][key].numpy()) for key in heads[0])
    recorded = json.loads((id_run / "train_config.json").read_text())
    assert recorded["model_source"] == source and Path(recorded["model_dir"]).name == FIRST
    assert json.loads((folder_run / "train_config.json").read_text())["model_source"] is None


@pytest.mark.fast
def test_what_reads_as_a_hub_id():
    from prep.models import hub_source, parse_hub_id

    assert parse_hub_id("bert-base-uncased") == ("bert-base-uncased", None)
    assert parse_hub_id("microsoft/deberta-v3-small@main") == ("microsoft/deberta-v3-small", "main")
    assert parse_hub_id(f"org/name@{FIRST}") == ("org/name", FIRST)
    assert parse_hub_id("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    for path in ("/abs/model", "./model", "~/model", "runs/finetune-gap/model", "org--x/name", "a/b..c", "org/name@"):
        assert parse_hub_id(path) is None, path
    assert hub_source(REPO / "prep") is None
