"""Models for fine-tuning: the pretrained encoder plus a task's head; saving and loading.

The heads live with their tasks (``tasks/<name>/model.py``, built through the task's
``build_model(head, encoder)``); this module holds what every model shares: loading the
encoder, autocast, float32 regions for heads, and the run folder's model files. The encoder is
loaded without its pooler, so every parameter gets a gradient each step and DDP needs no
``find_unused_parameters``.

``OUT/model/`` is what the ecosystem loads: a task with a Hugging Face counterpart writes it as
that class through its spec's ``save_pretrained`` (SQuAD: ``AutoModelForQuestionAnswering``,
encoder and span head together), and ``load_encoder`` still reads the encoder from it. Heads with
no Hugging Face class (GAP's) live only in ``OUT/head.safetensors``: load those runs with
:func:`load_finetuned` (``train.model.load_finetuned(run_dir)``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from prep.artifact import atomic_file, replace_dir
from prep.folders import RunFolder

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "added_tokens.json",
)
# Keys a collated batch carries besides a model's inputs: labels and ids, ignored by forward().
_IGNORED_KEYS = frozenset({"feature_id", "label", "start_positions", "end_positions", "example_index"})


def check_extra(extra: dict) -> None:
    unknown = set(extra) - _IGNORED_KEYS
    if unknown:
        raise TypeError(f"unexpected forward arguments: {sorted(unknown)}")


_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def cpu_has_native_bf16(unknown: bool = True) -> bool:
    """Whether oneDNN runs bf16 matmuls natively here (AVX512-BF16 or AMX), not by emulation;
    ``unknown`` where this torch build cannot tell (True: say nothing rather than warn wrongly;
    precision ``auto`` passes False, so it never picks bf16 on a guess)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # a private op: a build may lack it
    except (AttributeError, RuntimeError):
        return unknown


def precision_warning(precision: str, device_type: str) -> str | None:
    """What to tell a user whose CPU emulates the half precision they asked for (it still trains)."""
    if device_type != "cpu":
        return None
    if precision == "fp16":
        return ("fp16 on CPU: autocast float16 + GradScaler work, but most CPUs emulate fp16 matmuls "
                "(several times slower than fp32); use --precision fp32/auto, or bf16 on a CPU with AVX512-BF16/AMX")
    if precision == "bf16" and not cpu_has_native_bf16():
        return (f"bf16 on a CPU without AVX512-BF16/AMX (torch reports {torch.backends.cpu.get_cpu_capability()}): "
                "autocast bfloat16 is emulated, many times slower than fp32 (measured on such a CPU: 6 MPNet "
                "steps of 16 sequences unfinished after 10 min, against 9 s a step in fp32); use --precision fp32/auto")
    return None


def float32_region(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


def init_linear(module: nn.Linear, std: float) -> None:
    nn.init.normal_(module.weight, mean=0.0, std=std)
    nn.init.zeros_(module.bias)


@contextlib.contextmanager
def _quiet_transformers():
    """No load report (the dropped pooler is expected) and no per-shard progress bars."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# The config attributes that hold an encoder's dropout (BERT, RoBERTa, MPNet, ELECTRA spell them so).
DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def load_encoder(model_dir: str | Path, pooler: bool = False, dropout: float | None = None,
                 attention_dropout: float | None = None):
    """The ``AutoModel`` encoder of a local folder (BERT, RoBERTa, MPNet, ELECTRA, ...), float32, SDPA
    attention where the architecture has it; no pooler unless ``pooler``.

    ``dropout`` (None: the folder's own) replaces its hidden and attention dropout; the heads read
    ``config.hidden_dropout_prob``, so theirs follows. ``attention_dropout`` then replaces the
    attention's alone (0 lets SDPA take its fused kernel on CPU). An encoder without those settings
    is refused.

    Without a pooler every parameter gets a gradient each step, so DDP needs no
    ``find_unused_parameters``; a task whose head reads the pooler asks for it. Architectures
    built without a pooler argument (DistilBERT, DeBERTa) are loaded as they are.
    """
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model folder (no config.json)")
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        if dropout is not None:
            missing = [name for name in DROPOUT_ATTRIBUTES if not hasattr(config, name)]
            if missing:
                raise ValueError(f"{model_dir}: a {config.model_type} config has no {' / '.join(missing)}, "
                                 "so --dropout cannot be set for it; leave it unset")
            for name in DROPOUT_ATTRIBUTES:
                setattr(config, name, dropout)
        if attention_dropout is not None:
            if not hasattr(config, "attention_probs_dropout_prob"):
                raise ValueError(f"{model_dir}: a {config.model_type} config has no attention_probs_dropout_prob, "
                                 "so --attention-dropout cannot be set for it; leave it unset")
            config.attention_probs_dropout_prob = attention_dropout
        model_class = _encoder_class(config)
        kwargs = {}
        if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            kwargs["add_pooling_layer"] = pooler
        if getattr(model_class, "_supports_sdpa", False):
            kwargs["attn_implementation"] = "sdpa"
        return model_class.from_pretrained(str(model_dir), config=config, dtype=torch.float32,
                                           local_files_only=True, **kwargs)


def _encoder_class(config):
    from transformers import AutoModel

    try:
        return AutoModel._model_mapping[type(config)]
    except KeyError as err:
        raise ValueError(f"{config.model_type}: no AutoModel encoder for this model type") from err


def takes_token_types(encoder: nn.Module) -> bool:
    """Whether ``encoder`` has a token-type embedding (BERT, RoBERTa, ELECTRA do; MPNet, DistilBERT don't)."""
    return getattr(getattr(encoder, "embeddings", None), "token_type_embeddings", None) is not None


def encode(encoder: nn.Module, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
    """The encoder's last hidden states ``[B, T, H]``; ``token_type_ids`` are passed only to an encoder
    that has token types (MPNet's forward has no such argument)."""
    kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None and takes_token_types(encoder) else {}
    return encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state


def build_model(spec, head: str, model_dir: str | Path, data_info: dict | None = None,
                dropout: float | None = None, attention_dropout: float | None = None) -> nn.Module:
    """A model to fine-tune: the pretrained encoder from ``model_dir`` (its dropout replaced by
    ``dropout`` when set) plus a fresh ``head`` of the task whose training part is ``spec`` (a
    :class:`tasks.spec.TrainSpec`).

    Call under a fixed seed: a new head (and any new embedding rows) draws from the global
    torch generator.
    """
    encoder = _task_encoder(spec, model_dir, dropout, attention_dropout)
    return spec.build_model(head, encoder, data_info=data_info or {})


def _task_encoder(spec, folder: str | Path, dropout: float | None = None, attention_dropout: float | None = None):
    """``folder``'s encoder as task ``spec`` uses it: with a pooler if its head reads one, and with what the
    task's export moved out of the encoder put back (a RoBERTa/MPNet classifier keeps the pooler in its head)."""
    encoder = load_encoder(folder, pooler=spec.encoder_pooler, dropout=dropout, attention_dropout=attention_dropout)
    if spec.restore_pretrained is not None:
        spec.restore_pretrained(encoder, folder)
    return encoder


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return getattr(model, "module", model)


def save_finetuned(model: nn.Module, spec, out_dir: str | Path, source_model_dir: str | Path) -> None:
    """Write ``OUT/model/`` (weights + config + tokenizer files) and ``OUT/head.safetensors``.

    ``OUT/model/`` holds the task's Hugging Face model when its training part ``spec`` has
    ``save_pretrained`` (encoder and head in one folder), else the bare encoder. Both land atomically: the model
    folder is written beside its destination and renamed.
    """
    from safetensors.torch import save_file

    model = unwrap(model)
    save_pretrained = spec.save_pretrained
    run = RunFolder(out_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    tmp = run.path / f".{run.MODEL}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with _quiet_transformers():
        if save_pretrained is not None:
            save_pretrained(model, tmp)
        else:
            model.encoder.save_pretrained(str(tmp))
    for name in TOKENIZER_FILES:
        source = Path(source_model_dir) / name
        if source.is_file():
            shutil.copyfile(source, tmp / name)
    replace_dir(tmp, run.model)
    head_state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    with atomic_file(run.head) as head_tmp:
        save_file(head_state, str(head_tmp), metadata={"task": model.task, "head": model.head_name})


def load_finetuned(out_dir: str | Path, spec, device: str | torch.device = "cpu"):
    """``(model, train_config_dict)`` from a finished training output folder, in eval mode on ``device``.

    ``spec`` is the training part of the run's task (its ``train_config.json`` names the task;
    the caller resolves it). The model is what the task's ``build_model`` returns (forward signatures in
    ``tasks/<name>/model.py``); ``train_config_dict`` is ``OUT/train_config.json`` (task, head, model source,
    features dir, max_seq_length, ...).
    """
    from safetensors.torch import load_file

    run = RunFolder(out_dir)
    for path in (run.train_config, run.model / "config.json", run.head):
        if not path.is_file():
            raise FileNotFoundError(f"{run.path}: not a finished training output ({path.name} missing)")
    train_config = json.loads(run.train_config.read_text(encoding="utf-8"))
    encoder = _task_encoder(spec, run.model)
    model = spec.build_model(train_config["head"], encoder, data_info=train_config.get("data_info") or {})
    head_state = load_file(str(run.head))
    if "temperature" in dict(model.head.named_buffers()):
        head_state.setdefault("temperature", torch.ones(()))  # heads saved before calibration existed
    model.head.load_state_dict(head_state, strict=True)
    return model.to(device).eval(), train_config
