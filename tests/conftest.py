"""Shared test fixtures: the packaged tokenizer, one tiny random encoder, the real data under ../shared/data."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
# No test reaches the Hugging Face Hub: a model named by Hub id comes from the cache alone (huggingface_hub
# reads this when it is imported, and subprocesses inherit it). The Hub tests (tests/test_hub_models.py)
# give their subprocesses a loopback server of their own instead.
os.environ["HF_HUB_OFFLINE"] = "1"
# Real data lives outside the repo; BERTFLOW_DATA points elsewhere if needed.
DATA_DIR = Path(os.environ.get("BERTFLOW_DATA", REPO.parent / "shared" / "data"))
# Tokenizer files and configs of other encoder families (no weights), ../shared/models/README.md.
MODELS_DIR = Path(os.environ.get("BERTFLOW_MODELS", REPO.parent / "shared" / "models"))


def under_ci() -> bool:
    """True on CI (``CI=true``, set by CI runners and by .ci/run): nothing the suite needs may be missing."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test with ``reason`` on a developer machine; fail it under CI.

    A CI run that skips because its data or its browser is missing proves nothing, so there the
    same reason fails the run. Only hardware a CI machine cannot have (a CUDA GPU, nsys) may
    skip under CI, with a plain ``pytest.mark.skipif``.
    """
    if under_ci():
        pytest.fail(f"{reason} [CI=true: a missing prerequisite fails the run instead of skipping]", pytrace=False)
    pytest.skip(reason)


def fine_tune(config, env, **kwargs):
    """``train.loop.train`` as the entry points call it: the config's task resolved to its TrainSpec."""
    from tasks import get_task
    from train.loop import train

    return train(config, get_task(config.task).train, env, **kwargs)


def shared_data(relative: str) -> Path:
    """Path of a real data file; where it is missing, skip saying where it was looked for (fail under CI)."""
    path = DATA_DIR / relative
    if not path.is_file():
        skip_or_fail(f"real data not found: {path} (set BERTFLOW_DATA to the folder holding gap/ and squad/)")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    from prep.tokenizer import default_model_dir

    return default_model_dir()


def shared_model(name: str) -> Path:
    """A folder under ../shared/models (tokenizer + config); skip where missing (fail under CI)."""
    path = MODELS_DIR / name
    if not (path / "config.json").is_file():
        skip_or_fail(f"model folder not found: {path} (set BERTFLOW_MODELS to the folder holding it)")
    return path


@pytest.fixture(scope="session")
def mpnet_tokenizer_dir() -> Path:
    """all-mpnet-base-v2's tokenizer and config: the RoBERTa/MPNet layout ``<s> q </s></s> c </s>``, pad 1."""
    return shared_model("all-mpnet-base-v2-tokenizer")


@pytest.fixture(scope="session")
def roberta_tokenizer_dir(tmp_path_factory) -> Path:
    """A RoBERTa tokenizer (byte-level BPE, ``<s> q </s></s> c </s>``, trimmed offsets, no token types)
    trained in-process on SQuAD dev text: the real family's rules, with a 2,000-token vocabulary."""
    import json

    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    texts = []
    for article in json.loads(shared_data("squad/dev-v1.1.json").read_text(encoding="utf-8"))["data"][:3]:
        for paragraph in article["paragraphs"]:
            texts += [paragraph["context"], *(qa["question"] for qa in paragraph["qas"])]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=2000, special_tokens=specials, show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")),
                                           trim_offsets=True)
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                     sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                     mask_token="<mask>")
    folder = tmp_path_factory.mktemp("roberta-tokenizer")
    tokenizer.save_pretrained(str(folder))
    return folder


def _frozen(folder: Path):
    """Yield ``folder`` and, once the session ends, check that no test changed it (it is shared)."""
    def listing() -> dict:
        return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns)
                for f in sorted(folder.rglob("*"))}

    before = listing()
    yield folder
    assert listing() == before, f"a test wrote into the shared {folder}; copy it instead"


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """One tiny random BERT folder (2 layers, hidden 64, seed 0) with the packaged tokenizer, dropout 0:
    deterministic, so runs at any world size give the same losses. Shared: read it, never write into it."""
    from train.testing import make_tiny_model_dir

    yield from _frozen(make_tiny_model_dir(tmp_path_factory.mktemp("tiny-encoder") / "model", tokenizer_dir,
                                           seed=0, dropout=0.0))


@pytest.fixture(scope="session")
def tiny_encoder_dir_dropout(tmp_path_factory, tokenizer_dir) -> Path:
    """:func:`tiny_encoder_dir` with BERT's dropout 0.1 (the folder default a fine-tune inherits)."""
    from train.testing import make_tiny_model_dir

    yield from _frozen(make_tiny_model_dir(tmp_path_factory.mktemp("tiny-encoder-dropout") / "model", tokenizer_dir,
                                           seed=0, dropout=0.1))


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
    from prep.tokenizer import load_fast_tokenizer

    return load_fast_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP threads that spin while another
    process holds a core make a shared CI machine many times slower; subprocesses get
    OMP_NUM_THREADS=1 likewise."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def luigi_config(section: str, **values):
    """Set luigi.cfg values for the duration of a block (the config is process-global)."""
    import luigi

    config = luigi.configuration.get_config()
    saved = {key: config.get(section, key, None) for key in values}
    for key, value in values.items():
        config.set(section, key, str(value))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                config.remove_option(section, key)
            else:
                config.set(section, key, value)
