"""GLUE (Wang et al., ICLR 2019) on the classification task: the benchmark table for any encoder.

Modules: ``benchmark`` (the tasks: files, columns, label sets, official metrics, the write-up's
reference rows), ``read`` (official TSVs, every row accounted for), ``prep`` (the tokenizer's own
pair layout; ``python -m prep glue``), ``evaluate`` (coverage checked, official scores),
``metrics`` (GLUE's metrics and averages), ``table`` (the results table), ``suite`` (the
``GlueResults`` entry's plan), ``predict`` (test files -> the GLUE server's submission file). The
model, loss and per-text scoring are textclass's.
"""

from __future__ import annotations

from tasks.glue import evaluate, predict, prep, report, suite, table
from tasks.glue.benchmark import official_files
from tasks.glue.read import GlueFormatError
from tasks.spec import EvalSpec, PredictSpec, PrepSpec, SuitePlan, TaskSpec
from tasks.textclass import model
from tasks.textclass.evaluate import TextClassEvalConfig
from tasks.textclass.report import report_sections

SPEC = TaskSpec(
    name="glue",
    description="GLUE benchmark tasks (sentence / sentence-pair classification and regression)",
    prep=PrepSpec(config=prep.GluePrepConfig, prepare=prep.prepare_glue, summarize=prep.summarize,
                  input_errors=(GlueFormatError, evaluate.GlueCoverageError),
                  input_help="an official GLUE TSV (train.tsv, dev.tsv, ...)",
                  default_nproc=1),  # each worker loads the tokenizer: one is quicker on a GLUE file
    train=model.classifier_train_spec(),
    eval=EvalSpec(
        config=TextClassEvalConfig,
        evaluate=evaluate.evaluate,
        metric_rows=report.metric_rows,
        report_sections=report_sections,
        headline=report.headline,
        aggregate_metrics=report.AGGREGATE_METRICS,
        metric_labels=report.METRIC_LABELS,
        metric_digits=report.METRIC_DIGITS,
        predict=PredictSpec(prep_config=predict.prep_config, predict=predict.predict, write_inputs=predict.write_inputs,
                            input_help="the run's GLUE task's test.tsv (index column and sentences, no label)"),
    ),
    data_files=official_files(),
    plan=SuitePlan(entry="GlueResults", default_members=suite.BUNDLED, parse_members=suite.parse_members,
                   member_plan=suite.member_plan, recipe_section=suite.recipe_section, write_table=table.write_table,
                   table_name=table.TABLE, monitor=True),
)
