"""Text classification (and regression) from the user's own labelled CSV / TSV / JSON lines / Parquet, with
token folding, as one task on the seam (see tasks/spec.py).

Modules: ``read`` (files in, clear errors naming file / line / column, skipped rows counted),
``split`` (seeded, stratified, duplicates kept in one split), ``prep`` (texts folded into
``max_seq_length`` windows on the shared pool; ``python -m prep textclass``), ``model`` (pooler ->
dropout -> linear head, saved as ``AutoModelForSequenceClassification``), ``metrics``,
``evaluate`` (a text's windows pooled into one prediction; ``test_predictions.csv``), ``report``,
``score`` (re-scoring, ensembles), ``userdata`` (the ``TextClassification`` entry's split step),
``predict`` (new texts without labels -> ``predictions.csv``).
"""

from __future__ import annotations

from tasks.spec import EvalSpec, PredictSpec, PrepSpec, TaskSpec, UserDataPlan
from tasks.textclass import evaluate, model, predict, prep, report, score, userdata
from tasks.textclass.read import TextClassFormatError

SPEC = TaskSpec(
    name="textclass",
    description="Text classification from a labelled CSV with token folding",
    prep=PrepSpec(config=prep.TextClassPrepConfig, prepare=prep.prepare_textclass, summarize=prep.summarize,
                  input_errors=(TextClassFormatError,), input_help="labelled CSV, TSV, JSON-lines or Parquet file",
                  chunk_param="rows_per_chunk", chunk_help="texts per pool task"),
    train=model.classifier_train_spec(),
    eval=EvalSpec(
        config=evaluate.TextClassEvalConfig,
        evaluate=evaluate.evaluate,
        metric_rows=report.metric_rows,
        report_sections=report.report_sections,
        headline=report.headline,
        aggregate_metrics=report.AGGREGATE_METRICS,
        metric_labels=report.METRIC_LABELS,
        metric_digits={"accuracy": 3, "macro_f1": 3, "weighted_f1": 3, "mcc": 3, "window_accuracy": 3, "pearson": 3,
                       "spearman": 3, "mse": 4},
        ensemble=score.ensemble,
        score_file=score.score_file,
        score_file_args=score.add_score_args,
        predict=PredictSpec(prep_config=predict.prep_config, predict=predict.predict, write_inputs=predict.write_inputs,
                            options=predict.TextClassPredictOptions,
                            input_help="the training file's layout (CSV, TSV, JSON lines, ...) without the label column"),
    ),
    plan=UserDataPlan(
        entry="TextClassification",
        split_config=userdata.TextClassSplitConfig,
        input_fields=("data", "validation_data", "test_data"),
        write_splits=userdata.write_user_splits,
        prep_values=userdata.split_prep_values,
        options=userdata.TextClassOptions,
        option_values=userdata.option_values,
    ),
)
