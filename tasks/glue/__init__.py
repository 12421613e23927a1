"""GLUE (Wang et al., ICLR 2019) on the classification task: the benchmark table for any encoder.

Modules: ``benchmark`` (the tasks: files, columns, label sets, official metrics, the write-up's
reference rows), ``read`` (official TSVs, every row accounted for), ``prep`` (the tokenizer's own
pair layout; ``python -m prep glue``), ``evaluate`` (coverage checked, official scores),
``metrics`` (GLUE's metrics and averages), ``table`` (the results table), ``suite`` (the
``GlueResults`` entry's plan). The model, loss and per-text scoring are textclass's.
"""

from __future__ import annotations

from tasks.glue import evaluate, prep, report, suite, table
from tasks.glue.benchmark import official_files
from tasks.glue.read import GlueFormatError
from tasks.spec import SuitePlan, TaskSpec
from tasks.textclass import model
from tasks.textclass.evaluate import TextClassEvalConfig
from tasks.textclass.report import report_sections

SPEC = TaskSpec(
    name="glue",
    description="GLUE benchmark tasks (sentence / sentence-pair classification and regression)",
    prep_config=prep.GluePrepConfig,
    prepare=prep.prepare_glue,
    prep_main=prep.main,
    summarize=prep.summarize,
    input_errors=(GlueFormatError, evaluate.GlueCoverageError),
    **model.classifier_spec_fields(),
    data_files=official_files(),
    suite=SuitePlan(entry="GlueResults", default_members=suite.BUNDLED, parse_members=suite.parse_members,
                    member_plan=suite.member_plan, recipe_section=suite.recipe_section, write_table=table.write_table,
                    table_name=table.TABLE, monitor=True),
    eval_config=TextClassEvalConfig,
    evaluate=evaluate.evaluate,
    metric_rows=report.metric_rows,
    report_sections=report_sections,
    headline=report.headline,
    aggregate_metrics=report.AGGREGATE_METRICS,
    metric_labels=report.METRIC_LABELS,
    metric_digits=report.METRIC_DIGITS,
)
