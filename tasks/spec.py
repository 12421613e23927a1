"""What a task hands the engines: one frozen :class:`TaskSpec` holding a part per engine.

An entry point (a ``__main__``, a Luigi task) resolves the task once (:func:`tasks.get_task`) and
passes the spec, or the part an engine needs, down; no engine looks a task up.

- :class:`PrepSpec` for ``prep/`` (the prep command, ``<Task>Features``);
- :class:`TrainSpec` for ``train/`` (model, batches, loss, held-out counts, export);
- :class:`EvalSpec` for ``eval/`` (evaluation, report, aggregate tables, re-scoring), with its
  :class:`PredictSpec` (predictions on new, unlabelled data);
- ``data_files``, ``plan`` and ``sweep_objective`` for ``pipeline/`` (official files, the task's
  place in the DAG, what a sweep optimises).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


class InputMismatchError(ValueError):
    """Model, features and data do not belong together (task, tokenizer, source file, split)."""


@dataclass(frozen=True)
class OfficialFile:
    """A benchmark file at its official URL, with the checksum a copy must have."""

    url: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>"
    # A file inside an archive (a zip at ``url``): its path there; ``checksum`` is the member's own.
    member: str | None = None
    # An [inputs] key naming a folder of the user's copies, where this file is ``<folder>/<member>``
    # (e.g. GLUE's ``glue_dir``), used as it is, like an [inputs] path of its own.
    folder_key: str | None = None
    local_path: str | None = None  # where it goes under [inputs] data_dir (default: the URL's file name)
    downloadable: bool = True  # False: no direct download; the error says where to put the file

    @property
    def filename(self) -> str:
        return self.local_path or self.url.rsplit("/", 1)[1]


@dataclass(frozen=True)
class DataRole:
    """One data file's part in FullRun: which official file, with which prep settings.

    ``prep`` fixes prep-config fields for this role (SQuAD's ``split``); ``subset_flag`` names a
    FullRun parameter (``<task>_<subset_flag>``) that sets the prep field ``subset_field``
    (SQuAD's ``--squad-train-articles`` -> ``max_articles``); 0 or unset means all.
    """

    data: str
    prep: Mapping[str, Any] = field(default_factory=dict)
    subset_flag: str | None = None
    subset_field: str | None = None
    subset_help: str = ""


@dataclass(frozen=True)
class FullRunPlan:
    """Train on ``train``, choose (epoch selection, calibration) on ``select``, score on ``test``."""

    train: DataRole
    test: DataRole
    select: DataRole | None = None

    def roles(self) -> dict[str, DataRole]:
        found = {"train": self.train, "select": self.select, "test": self.test}
        return {role: value for role, value in found.items() if value is not None}


@dataclass(frozen=True)
class UserDataPlan:
    """A task whose data the user brings: one Luigi entry task takes the file(s), splits them,
    and runs features -> fine-tune -> evaluation on the splits.

    ``split_config`` is a frozen dataclass whose fields are the entry's data parameters (files,
    columns, split ratios, seed); ``input_fields`` names those that are input files (their
    sha256 names the splits artifact). ``write_splits(config, folder)`` writes ``train`` /
    ``validation`` / ``test`` files (``<split>.<split_suffix>``) and ``manifest.json`` into
    ``folder`` (publishing the folder atomically, e.g. with ``prep.artifact.atomic_output_dir``)
    and returns the manifest. ``prep_values(config)`` gives the prep-config values
    that read those files (the same for the three splits).

    ``options`` (optional) is a frozen dataclass of further entry flags that are not about the
    data (e.g. ``--no-fold``); ``option_values(options)`` turns them into ``(prep values,
    evaluation values)`` for the three features tasks and the test ``Evaluation``. A value it
    leaves out is the luigi.cfg section's (``[<Task>Features]``, ``[<Task>Evaluation]``).
    """

    entry: str
    split_config: type
    input_fields: tuple[str, ...]
    write_splits: Callable[[Any, Path], dict]
    prep_values: Callable[[Any], dict]
    split_suffix: str = "jsonl"
    options: type | None = None
    option_values: Callable[[Any], tuple[dict, dict]] | None = None


@dataclass(frozen=True)
class SuitePlan:
    """A benchmark of several member tasks on one task's model (GLUE: CoLA, SST-2, ...), each fine-tuned
    and scored per seed, ending in one table: a generated Luigi entry task ``entry``.

    ``parse_members(text)`` turns the entry's ``--tasks`` value (``"cola,sst2"``) into member names;
    ``member_plan(member)`` gives the member's ``<Task>Features`` parameters for training and for
    each file it is scored on (``(train, [test, ...])``); the member's recipe (any ``<Task>FineTuned``
    parameter or prep field) is read from the luigi.cfg section ``recipe_section(member)``.
    ``write_table(evals, out_dir, not_run)`` writes ``table_name`` (Markdown) and its companions into
    ``out_dir`` from ``evals``: ``{(member, seed): [evaluation folders]}``; ``not_run`` lists the
    ``(member, seed)`` cells left out (a run stopped early), which the table must say.
    """

    entry: str
    default_members: str
    parse_members: Callable[[str], list[str]]
    member_plan: Callable[[str], tuple[dict, list[dict]]]
    recipe_section: Callable[[str], str]
    write_table: Callable[[dict, Path, list], None]
    table_name: str = "table.md"
    # Also score the first test file at every epoch end (learning curves in the run's metrics.json and
    # TensorBoard); nothing is selected on it (select_best stays as the recipe says).
    monitor: bool = False


@dataclass(frozen=True)
class EvalContext:
    """What the evaluation engine hands a task's ``evaluate``."""

    model: Any  # the fine-tuned model in eval mode (train.model.load_finetuned)
    features: Any  # pyarrow.Table of the eval features
    manifest: dict  # the features' manifest
    data_path: Path  # the benchmark file the features were built from
    config: Any  # the task's eval_config instance
    device: str
    pad_id: int

    @property
    def skipped_ids(self) -> tuple[str, ...]:
        """Examples prep skipped: still scored (as a wrong / uniform answer), never dropped."""
        return tuple(s["example_id"] for s in self.manifest.get("skipped", []) if s.get("example_id"))


@dataclass
class EvalOutcome:
    """A task's evaluation: the metrics.json fields, its files, and data for its report plots.

    ``summary`` holds at least ``metrics``; ``config`` adds resolved settings to the recorded
    config; ``write_files(folder)`` writes the task's prediction files into the output folder.
    """

    summary: dict
    write_files: Callable[[Path], None]
    config: dict = field(default_factory=dict)
    plot_data: dict | None = None


@dataclass(frozen=True)
class PredictContext:
    """What the prediction engine (:mod:`eval.predict`) hands a task's ``predict``.

    ``features`` were built from ``data_path`` by the task's own ``prepare(..., labelled=False)``
    with the run's tokenizer; ``manifest`` is theirs (the rows prep skipped, with reasons).
    """

    model: Any  # the fine-tuned model in eval mode (train.model.load_finetuned)
    features: Any  # pyarrow.Table of the new data's features (possibly empty: every row skipped)
    manifest: dict  # the features' manifest
    data_path: Path  # the file of new inputs
    config: Any  # the task's eval_config instance (decoding, pooling, batch size)
    device: str
    pad_id: int
    train_config: dict  # the run's train_config.json (``data_info``: the training data's labels, version)
    progress: Callable[[int, int], None] | None = None  # (batches done, batches) during inference

    @property
    def skipped(self) -> dict[str, str]:
        """``{example id: reason}`` of the inputs prep left out (reported, never silently dropped)."""
        return {s["example_id"]: s.get("reason", "") for s in self.manifest.get("skipped", []) if s.get("example_id")}


@dataclass
class PredictOutcome:
    """A task's predictions: one plain dict per input (in input order; what the Python API returns;
    a skipped input has ``"skipped": reason``), ``write_files(folder)`` for the task's usual files,
    and counts for the record."""

    records: list[dict]
    write_files: Callable[[Path], None]
    counts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SweepObjective:
    """What a hyper-parameter sweep (``luigi --module pipeline Sweep``) optimises, on the validation split only.

    ``metric``: a key of the validation Evaluation's ``metrics`` (e.g. ``log_loss``, ``accuracy``)
    or a held-out figure of the fine-tune (``eval_loss`` after selection and calibration,
    ``eval_<count>``); ``epoch_metric``: the trainer's per-epoch held-out figure reported to the
    trial for pruning, better in the same ``direction``. The default, the held-out loss, is the
    validation log loss of a classifier such as GAP's; a task whose figure of merit is another
    (accuracy, a dev F1) sets its own, e.g. ``SweepObjective("accuracy", "maximize", "eval_accuracy")``.
    """

    metric: str = "eval_loss"
    direction: str = "minimize"
    epoch_metric: str = "eval_loss"

    def __post_init__(self):
        if self.direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be minimize or maximize, got {self.direction!r}")


def _none(*_args, **_kwargs):
    return None


@dataclass(frozen=True)
class PrepSpec:
    """What the prep engine needs: the settings, the builder, its one-line report, its input errors.

    ``config`` is a frozen dataclass whose fields are the prep command's flags and the
    ``<Task>Features`` Luigi parameters; ``prepare(input_path, out_dir, encoder_dir, config, nproc,
    mode, reserve_cpus, progress, labelled=True) -> manifest`` runs :func:`prep.stage.run_stage` on
    the shared pool (``labelled=False``: inputs without answers or labels, for predictions; a label
    present is not read, and the features' label columns hold -1 or NaN);
    ``summarize(manifest, out_dir)`` is the command's one-line report; ``input_errors`` are the
    exception types that mean bad input (printed as one line, no traceback). The command
    (``python -m prep <task>``, :func:`prep.cli.prep_command`) is derived from these: ``input_help``
    describes its input, ``chunk_param`` names ``prepare``'s items-per-pool-task parameter (a
    ``--<chunk-param>`` flag with that parameter's default), ``default_nproc`` overrides the
    worker default (CPUs - 1).
    """

    config: type
    prepare: Callable[..., dict]
    summarize: Callable[[dict, Path], str]
    input_errors: tuple[type[BaseException], ...] = ()
    input_help: str = "input file"
    chunk_param: str | None = None
    chunk_help: str = ""
    default_nproc: int | None = None

    def make_config(self, **values):
        """The prep config from ``values``, ignoring keys that are not its fields."""
        names = {f.name for f in dataclasses.fields(self.config)}
        return self.config(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class TrainSpec:
    """What the training engine needs: the heads, the model, batches, loss and held-out counts.

    ``build_model(head, encoder, data_info)`` (``data_info``: the training features'
    ``manifest["input"]``, e.g. a classifier's label set; kept in ``train_config.json`` so a saved
    run rebuilds the same model); ``collate(rows, pad_id, pad_to_multiple_of)``; ``loss(output,
    batch)``; ``eval_counts(output, batch)`` (held-out counts: ``{"accuracy": correct rows}`` gives
    ``eval_accuracy``); ``synthetic_features(rows, seed)`` with ``synthetic_data_info()``
    (profiling, benchmarks, tests); ``save_pretrained(model, folder)`` (optional: write ``OUT/model/``
    as the Hugging Face class that loads with the head; unset, the bare encoder is written) and
    ``restore_pretrained(encoder, folder)`` (optional: what loading the encoder from a folder does
    after, e.g. put back the pooler a RoBERTa/MPNet classifier keeps in its head).
    """

    heads: tuple[str, ...]
    default_head: str
    build_model: Callable[..., Any]
    collate: Callable[..., dict]
    loss: Callable[[Any, dict], Any]
    eval_counts: Callable[[Any, dict], dict]
    synthetic_features: Callable[..., Any]
    synthetic_data_info: Callable[[], dict] = dict  # the data_info that goes with synthetic_features
    calibratable: bool = False  # a classifier whose head has a temperature buffer and whose batches carry label
    encoder_pooler: bool = False  # the head reads the encoder's pooler output (kept, trained, saved)
    sequences_per_row: int = 1  # encoder sequences in one feature row (multiple choice: one per option)
    save_pretrained: Callable[[Any, Path], None] | None = None
    restore_pretrained: Callable[[Any, Path], None] | None = None


@dataclass(frozen=True)
class PredictSpec:
    """What the prediction engine needs (``python -m eval predict <task>``, the Luigi ``Predict``,
    :class:`eval.predict.Predictor`): how new inputs are read, prepared and written.

    ``prep_config(train_config, features_config, options)`` gives the prep config the new data is
    built with: the run's (``features_config`` is the run's training features' recorded config, {}
    when that folder is gone; ``train_config`` its train_config.json) with the task's eval-time
    settings (SQuAD's eval split, no subset); ``options`` is an ``options`` instance (or None
    when the task has none): the flags that say how to read the file (textclass's columns).
    ``predict(context) -> PredictOutcome`` runs the evaluation's own inference and decoding on
    the features. ``write_inputs(inputs, folder, train_config) -> (file, options)`` writes a list
    of plain dicts (the Python API's inputs) as a file of the task's input format in ``folder``,
    and the options that read it back. ``input_help`` describes the accepted file.
    """

    prep_config: Callable[[dict, dict, Any], Any]
    predict: Callable[[PredictContext], PredictOutcome]
    write_inputs: Callable[[list, Path, dict], tuple[Path, Any]]
    options: type | None = None
    input_help: str = "file of new inputs"


@dataclass(frozen=True)
class EvalSpec:
    """What the evaluation engine needs: settings, the evaluation itself, and how results are shown.

    ``evaluate(context) -> EvalOutcome``; ``check_features(manifest, features_dir)`` (optional:
    refuse features evaluation cannot use); ``data_digest(path)`` (optional: the sha256 recorded
    for a ``--data`` that may be a folder; unset, ``--data`` must be a file); ``metric_rows(summary)``
    and ``report_sections(summary, out_dir, plot_data, written)`` for report.md; ``headline(metrics)``
    for compare and summaries; ``aggregate_metrics``, ``metric_labels``, ``metric_digits`` and
    ``ensemble(run_dirs, summaries)`` for ``eval aggregate``; ``score_file(args)`` with its flags
    (``score_file_args(parser)``) for ``python -m eval score-<task>``; ``predict`` (a
    :class:`PredictSpec`) for predictions on new data.
    """

    config: type
    evaluate: Callable[[EvalContext], EvalOutcome]
    metric_rows: Callable[[dict], list]
    report_sections: Callable[..., list[str]]
    headline: Callable[[dict], dict]
    aggregate_metrics: tuple[str, ...] = ()
    metric_labels: Mapping[str, str] = field(default_factory=dict)
    metric_digits: Mapping[str, int] = field(default_factory=dict)  # decimals in aggregate tables (default 1)
    check_features: Callable[[dict, Path], None] = _none
    data_digest: Callable[[Path], str] | None = None
    ensemble: Callable[[list[Path], list[dict]], dict] | None = None
    score_file: Callable[..., dict] | None = None
    score_file_args: Callable[[Any], None] | None = None
    predict: PredictSpec | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task: its name, the part each engine receives, its data files and its place in the DAG.

    ``plan`` says how the DAG runs the task: a :class:`FullRunPlan` (official files in FullRun
    roles), a :class:`UserDataPlan` (the user's own files, a generated entry task), a
    :class:`SuitePlan` (a benchmark of member tasks ending in one table), or None (stages only).
    """

    name: str
    description: str
    prep: PrepSpec
    train: TrainSpec
    eval: EvalSpec
    data_files: Mapping[str, OfficialFile] = field(default_factory=dict)
    plan: FullRunPlan | UserDataPlan | SuitePlan | None = None
    # hyper-parameter sweeps (pipeline/sweep.py): what a trial is judged by, on the validation split
    sweep_objective: SweepObjective = field(default_factory=SweepObjective)

    @property
    def luigi_prefix(self) -> str:
        """``Squad`` for squad: the prefix of this task's Luigi classes (SquadFeatures, SquadFineTuned)."""
        return "".join(part.capitalize() for part in self.name.replace("-", "_").split("_"))
