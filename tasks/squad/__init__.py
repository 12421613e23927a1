"""SQuAD v1.1 / v2.0 extractive question answering, as one task on the seam (see tasks/spec.py).

Modules: ``read`` (the SQuAD JSON reader prep and evaluation share), ``prep`` (windowed
features on the shared pool; ``python -m prep.squad``), ``model`` (span head, loss, batches),
``decode`` (n-best answers from logits), ``metrics`` (the official v1.1 / v2.0 scoring),
``evaluate`` (model in, predictions and metrics out), ``report``, ``score`` (re-score files),
``predict`` (answers to new questions).
"""

from __future__ import annotations

from tasks.spec import (DataRole, EvalSpec, FullRunPlan, InputMismatchError, OfficialFile, PredictSpec, PrepSpec,
                        TaskSpec, TrainSpec)
from tasks.squad import evaluate, model, predict, prep, report, score
from tasks.squad.read import SquadFormatError

_SITE = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
# sha256 where a verified copy was hashed (dev-v1.1, whose md5 matches the published one); for the
# others the md5 published with NVIDIA's BERT download script.
DATA_FILES = {
    "squad-train-v1.1": OfficialFile(_SITE + "train-v1.1.json", "md5:981b29407e0affa3b1b156f72073b945"),
    "squad-dev-v1.1": OfficialFile(_SITE + "dev-v1.1.json",
                                   "sha256:95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"),
    "squad-train-v2.0": OfficialFile(_SITE + "train-v2.0.json", "md5:62108c273c268d70893182d5cf8df740"),
    "squad-dev-v2.0": OfficialFile(_SITE + "dev-v2.0.json", "md5:246adae8b7002f8679c027697b0b7cf8"),
}


def check_features(manifest: dict, features_dir) -> None:
    """Evaluation needs the eval split: it carries the offset mapping answers are decoded with."""
    if manifest.get("split", "eval") != "eval":
        raise InputMismatchError(
            f"{features_dir} holds the {manifest.get('split')!r} split; evaluation needs features built with "
            "--split eval (they carry the offset mapping)"
        )


SPEC = TaskSpec(
    name="squad",
    description="SQuAD v1.1 / v2.0: EM / F1 with the official scripts' rules",
    prep=PrepSpec(config=prep.SquadPrepConfig, prepare=prep.prepare_squad, summarize=prep.summarize,
                  input_errors=(SquadFormatError,), input_help="SQuAD v1.1 or v2.0 JSON file",
                  chunk_param="contexts_per_chunk", chunk_help="paragraphs (contexts) per pool task"),
    train=TrainSpec(
        heads=model.HEADS,
        default_head="span",
        build_model=model.build_model,
        collate=model.collate_squad,
        loss=model.loss,
        eval_counts=model.eval_counts,
        synthetic_features=model.synthetic_squad_table,
        save_pretrained=model.save_question_answering,
    ),
    eval=EvalSpec(
        config=evaluate.SquadEvalConfig,
        evaluate=evaluate.evaluate,
        metric_rows=report.metric_rows,
        report_sections=report.report_sections,
        headline=report.headline,
        aggregate_metrics=report.AGGREGATE_METRICS,
        metric_labels=report.METRIC_LABELS,
        metric_digits={"best_f1_thresh": 3},
        check_features=check_features,
        score_file=score.score_file,
        score_file_args=score.add_score_args,
        predict=PredictSpec(prep_config=predict.prep_config, predict=predict.predict, write_inputs=predict.write_inputs,
                            input_help="SQuAD-format JSON whose questions need no answers"),
    ),
    data_files=DATA_FILES,
    plan=FullRunPlan(
        train=DataRole("squad-train-v1.1", prep={"split": "train"}, subset_flag="train_articles",
                       subset_field="max_articles", subset_help="first N train articles (0 or unset: all)"),
        test=DataRole("squad-dev-v1.1", prep={"split": "eval"}, subset_flag="dev_articles",
                      subset_field="max_articles", subset_help="first N dev articles (0 or unset: all)"),
    ),
)
