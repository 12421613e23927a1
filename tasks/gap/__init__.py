"""GAP gendered pronoun resolution (A, B or NEITHER), as one task on the seam (see tasks/spec.py).

Modules: ``read`` (the GAP TSV reader prep uses), ``formats`` (gold, Kaggle submission and
scorer TSV files), ``prep`` (P/A/B span features on the shared pool; ``python -m prep.gap``),
``model`` (the concat / multiply / segment heads, loss, batches), ``metrics`` (Kaggle log loss,
the GAP scorer's F1 and bias), ``evaluate``, ``report``, ``score`` (re-score files, ensembles),
``predict`` (new rows without the A/B labels -> Kaggle's submission.csv).
"""

from __future__ import annotations

from tasks.gap import evaluate, model, predict, prep, report, score
from tasks.gap.read import GapFormatError
from tasks.spec import DataRole, EvalSpec, FullRunPlan, OfficialFile, PredictSpec, PrepSpec, TaskSpec, TrainSpec

_REPO = "https://raw.githubusercontent.com/google-research-datasets/gap-coreference/master/"
DATA_FILES = {
    "gap-development": OfficialFile(_REPO + "gap-development.tsv",
                                    "sha256:b9a01434fcf58d8c2f9bc762480c27e58ce466cf1ffe8b09cfecbc7a20d2d634"),
    "gap-validation": OfficialFile(_REPO + "gap-validation.tsv",
                                   "sha256:2d784f66b390404f554704b9aef6dcde8845e79dda9886b8391cf7e9a24fdb98"),
    "gap-test": OfficialFile(_REPO + "gap-test.tsv",
                             "sha256:1c35e36d5b14f6313ec3f6cd67b275de282595dd59e59390e00cfff9897a6819"),
}

SPEC = TaskSpec(
    name="gap",
    description="GAP coreference: log loss, F1 by gender and the bias factor F/M",
    prep=PrepSpec(config=prep.GapPrepConfig, prepare=prep.prepare_gap, summarize=prep.summarize,
                  input_errors=(GapFormatError,), input_help="GAP TSV file (gap-development.tsv, ...)",
                  chunk_param="rows_per_chunk", chunk_help="TSV rows per pool task"),
    train=TrainSpec(
        heads=model.HEADS,
        default_head="multiply",
        build_model=model.build_model,
        collate=model.collate_gap,
        loss=model.loss,
        eval_counts=model.eval_counts,
        synthetic_features=model.synthetic_gap_table,
        calibratable=True,
    ),
    eval=EvalSpec(
        config=evaluate.GapEvalConfig,
        evaluate=evaluate.evaluate,
        metric_rows=report.metric_rows,
        report_sections=report.report_sections,
        headline=report.headline,
        aggregate_metrics=report.AGGREGATE_METRICS,
        metric_labels=report.METRIC_LABELS,
        metric_digits={"bias_f_over_m": 3, "log_loss": 3, "accuracy": 3},
        ensemble=score.ensemble,
        score_file=score.score_file,
        score_file_args=score.add_score_args,
        predict=PredictSpec(prep_config=predict.prep_config, predict=predict.predict, write_inputs=predict.write_inputs,
                            input_help="GAP TSV, with or without the A-coref / B-coref columns"),
    ),
    data_files=DATA_FILES,
    plan=FullRunPlan(train=DataRole("gap-development"), select=DataRole("gap-validation"), test=DataRole("gap-test")),
)
