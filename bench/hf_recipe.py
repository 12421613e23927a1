"""The Hugging Face run_qa feature recipe, reproduced as the reference for parity and speed.

``prepare_train_features`` / ``prepare_validation_features`` follow
transformers/examples/pytorch/question-answering/run_qa.py (pad_on_right, padding="max_length"),
line for line in what they compute, so tests can assert that ``tasks.squad.prep`` gives the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_examples(path: str | Path) -> list[dict]:
    """Flatten a SQuAD JSON file into run_qa's columns (id, context, question, answers)."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    examples = []
    for article in payload["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                examples.append({
                    "id": qa["id"],
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers],
                                "answer_start": [a["answer_start"] for a in answers]},
                })
    return examples


def prepare_train_features(examples: dict, tokenizer, max_seq_length: int, doc_stride: int) -> dict:
    """run_qa's prepare_train_features on a batch (dict of column lists)."""
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized = tokenizer(
        examples["question"],
        examples["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    tokenized["start_positions"] = []
    tokenized["end_positions"] = []
    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(i)
        answers = examples["answers"][sample_mapping[i]]
        if len(answers["answer_start"]) == 0:
            tokenized["start_positions"].append(cls_index)
            tokenized["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start_index = 0
        while sequence_ids[token_start_index] != 1:
            token_start_index += 1
        token_end_index = len(input_ids) - 1
        while sequence_ids[token_end_index] != 1:
            token_end_index -= 1
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            tokenized["start_positions"].append(cls_index)
            tokenized["end_positions"].append(cls_index)
        else:
            while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                token_start_index += 1
            tokenized["start_positions"].append(token_start_index - 1)
            while offsets[token_end_index][1] >= end_char:
                token_end_index -= 1
            tokenized["end_positions"].append(token_end_index + 1)
    tokenized["example_id"] = [examples["id"][j] for j in sample_mapping]
    return tokenized


def prepare_validation_features(examples: dict, tokenizer, max_seq_length: int, doc_stride: int) -> dict:
    """run_qa's prepare_validation_features on a batch: offsets kept, None outside the context."""
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized = tokenizer(
        examples["question"],
        examples["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    tokenized["example_id"] = []
    for i in range(len(tokenized["input_ids"])):
        sequence_ids = tokenized.sequence_ids(i)
        tokenized["example_id"].append(examples["id"][sample_mapping[i]])
        tokenized["offset_mapping"][i] = [
            (o if sequence_ids[k] == 1 else None) for k, o in enumerate(tokenized["offset_mapping"][i])
        ]
    return tokenized


def run_recipe(examples: list[dict], tokenizer, max_seq_length: int, doc_stride: int,
               split: str = "train", batch_size: int = 1000) -> dict:
    """The recipe over ``examples`` in batches, as ``datasets.map(batched=True)`` would run it."""
    prepare = prepare_train_features if split == "train" else prepare_validation_features
    out: dict[str, list] = {}
    for begin in range(0, len(examples), batch_size):
        rows = examples[begin : begin + batch_size]
        batch = {key: [row[key] for row in rows] for key in ("id", "context", "question", "answers")}
        for key, values in prepare(batch, tokenizer, max_seq_length, doc_stride).items():
            out.setdefault(key, []).extend(values)
    return out
