"""``Evaluation``: a fine-tuned model scored on eval features; wraps :mod:`eval.run`.

    luigi --module pipeline Evaluation --task squad --model-dir runs/finetune-squad-span-<hash> \\
        --features-dir runs/features/squad-eval-<hash> --data squad-dev-v1.1 --local-scheduler
    luigi --module pipeline Evaluation --task gap --model-dir runs/finetune-gap-multiply-<hash> \\
        --features-dir runs/features/gap-test-<hash> --input ../shared/data/gap/gap-test.tsv --local-scheduler

The output folder ``<runs_dir>/eval/<task>-<hash>`` holds metrics.json, the benchmark-format
predictions, report.md with its plots, and manifest.json (written last; the folder appears in
one rename). The hash covers the significant parameters (the upstream folders are themselves
content-addressed paths), the data file's sha256 and the eval schema version; batch size and
device only change speed.

``model_dir`` and ``features_dir`` are checked as external inputs. In a DAG, yield
``FineTuned`` and the features task first (dynamic dependencies) and then ``Evaluation`` with
their folders, or subclass ``Evaluation`` with a ``requires()`` that returns them.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import artifact_dir, content_hash, significant_params
from pipeline.data import OFFICIAL, DataFile
from prep.artifact import MANIFEST


class TrainingOutput(luigi.ExternalTask):
    """A finished training run folder (train writes metrics.json last)."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(str(Path(self.path) / "metrics.json"))


class FeaturesOutput(luigi.ExternalTask):
    """A finished prep output folder (its manifest.json is written last)."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(str(Path(self.path) / MANIFEST))


class Evaluation(luigi.Task):
    task = luigi.ChoiceParameter(choices=("squad", "gap"))
    model_dir = luigi.Parameter(description="the folder train wrote (FineTuned's run folder)")
    features_dir = luigi.Parameter(description="the eval-split features folder")
    input = luigi.OptionalParameter(default=None, description="the benchmark file the features were built from")
    data = luigi.OptionalChoiceParameter(choices=tuple(OFFICIAL), default=None,
                                         description="an official file by name, fetched by DataFile")
    n_best_size = luigi.IntParameter(default=20)
    max_answer_length = luigi.IntParameter(default=30)
    version_2_with_negative = luigi.OptionalBoolParameter(default=None, description="default: follow the data")
    null_score_diff_threshold = luigi.FloatParameter(default=0.0)
    max_context_only = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    batch_size = luigi.IntParameter(default=64, significant=False)
    device = luigi.Parameter(default="auto", significant=False)

    def requires(self):
        required = {"model": TrainingOutput(path=self.model_dir), "features": FeaturesOutput(path=self.features_dir)}
        if self.data:
            required["data"] = DataFile(name=self.data)
        return required

    @property
    def input_path(self) -> Path:
        if (self.input is None) == (self.data is None):
            raise ValueError(f"{self.task_family}: give exactly one of --input FILE or --data NAME")
        return Path(self.input) if self.input else DataFile(name=self.data).path

    @property
    def out_dir(self) -> Path:
        from eval.run import SCHEMA_VERSION

        params = significant_params(self)
        if self.task == "gap":  # SQuAD decoding knobs do not change a GAP evaluation
            params = {k: v for k, v in params.items() if k in ("task", "model_dir", "features_dir", "input", "data")}
        payload = {**params, "data_sha256": content_hash(self.input_path), "schema_version": SCHEMA_VERSION}
        return artifact_dir(f"eval/{self.task}", payload)

    def complete(self):
        # Before the data file exists there is no content hash, hence no output path.
        return self.input_path.is_file() and super().complete()

    def output(self):
        return luigi.LocalTarget(str(self.out_dir / MANIFEST))

    def run(self):
        from eval.config import GapEvalConfig, SquadEvalConfig
        from eval.run import run_gap_eval, run_squad_eval

        self.set_status_message(f"evaluating {self.task} on {self.input_path.name}")
        if self.task == "squad":
            config = SquadEvalConfig(
                n_best_size=self.n_best_size, max_answer_length=self.max_answer_length,
                version_2_with_negative=self.version_2_with_negative,
                null_score_diff_threshold=self.null_score_diff_threshold,
                max_context_only=self.max_context_only, batch_size=self.batch_size,
            )
            run_squad_eval(self.model_dir, self.features_dir, self.input_path, self.out_dir, config, self.device)
        else:
            run_gap_eval(self.model_dir, self.features_dir, self.input_path, self.out_dir,
                         GapEvalConfig(batch_size=self.batch_size), self.device)
        self.set_status_message(f"done: {self.out_dir}")
