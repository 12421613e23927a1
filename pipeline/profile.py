"""``Profile``: where a training step's time goes, plus DDP scaling; wraps :func:`profiling.run_profile`.

    luigi --module pipeline Profile --task squad --world-size 2 --local-scheduler      # synthetic features
    luigi --module pipeline Profile --task gap --features-dir runs/features/gap-dev-<hash> --local-scheduler

Output: ``<runs_dir>/profile-<task>-<hash>/profile_summary.json`` (+ ``profile_summary.md``, the
per-rank traces or Nsight reports). The hash covers every parameter that changes the profile,
world_size included (unlike FineTuned, where it only changes speed), the device kind and
back-end this machine resolves to, and the summary schema version; thread counts, the number of
operators listed and the prep plot's path are ``significant=False``. Without ``features_dir`` the
stage writes a small synthetic feature set of its own, so the bare command works anywhere.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, FolderOutput, significant_params, upstream_dir
from pipeline.params import ENCODER_HELP, EncoderDirParameter
from pipeline.prep_tasks import features_task
from prep.folders import FeaturesFolder
from prep.pool import available_cpus
from profiling.config import BACKENDS
from tasks import get_task, task_names
from train.config import DEVICES, PRECISIONS
from train.launch import visible_cuda_devices


class Profile(Artifact):
    task = luigi.ChoiceParameter(choices=task_names())
    train_features = luigi.OptionalDictParameter(
        default=None, description="the features' <Task>Features parameters (an upstream task)")
    features_dir = luigi.OptionalParameter(default=None, description="a finished features folder (neither: synthetic)")
    prep_nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    model_dir = EncoderDirParameter(default=None, description=ENCODER_HELP)
    world_size = luigi.IntParameter(default=1, description="training processes; changes the profile")
    warmup_steps = luigi.IntParameter(default=3)
    active_steps = luigi.IntParameter(default=5)
    precision = luigi.ChoiceParameter(choices=(*PRECISIONS, "auto"), default="auto")
    global_batch_size = luigi.IntParameter(default=32)
    per_device_batch_size = luigi.OptionalIntParameter(default=None)
    head = luigi.OptionalParameter(default=None)
    backend = luigi.ChoiceParameter(choices=BACKENDS, default="auto")
    device = luigi.ChoiceParameter(choices=DEVICES, default="auto")
    scaling = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    seed = luigi.IntParameter(default=42)
    synthetic_seq_length = luigi.IntParameter(default=128)
    cpu_threads_per_process = luigi.OptionalIntParameter(default=None, significant=False)
    top_k = luigi.IntParameter(default=15, significant=False)
    prep_scaling_png = luigi.OptionalParameter(default="docs/benchmarks/prep_scaling.png", significant=False)

    @property
    def resources(self):
        return {"gpu": self.world_size} if self._cuda_devices() else {}

    def _cuda_devices(self) -> int:
        return 0 if self.device == "cpu" else visible_cuda_devices()

    def _resolved_backend(self) -> str:
        from profiling import choose_backend
        from profiling.nsys import find_nsys

        try:
            return choose_backend(self.backend, find_nsys(), self._cuda_devices())[0]
        except ValueError:
            return "unavailable"

    def requires(self):
        if self.train_features is not None:
            return features_task(self.task, self.train_features, self.model_dir, self.prep_nproc)
        return FolderOutput(path=self.features_dir, marker=FeaturesFolder.MANIFEST) if self.features_dir else []

    def resolved_features_dir(self) -> Path | None:
        """The features folder profiled (None: synthetic); raises FileNotFoundError while it has no name."""
        if self.train_features is None:
            return Path(self.features_dir) if self.features_dir else None
        folder = upstream_dir(self.requires())
        if folder is None:
            raise FileNotFoundError("the features' input file is not there yet")
        return folder

    def folder_kind(self) -> str:
        return f"profile-{self.task}"

    def pending_payload(self) -> dict:
        """The settings: significant parameters, the device kind and back-end resolved here, the schema."""
        from profiling.summary import SCHEMA_VERSION

        return {
            **significant_params(self),
            "resolved_device": "cuda" if self._cuda_devices() else "cpu",
            "resolved_backend": self._resolved_backend(),
            "schema_version": SCHEMA_VERSION,
        }

    def name_payload(self) -> dict | None:
        try:
            features = self.resolved_features_dir()
        except FileNotFoundError:
            return None
        if self.train_features is None:
            return self.pending_payload()
        return {**self.pending_payload(), "features": features.name}

    @property
    def done_file(self) -> str:
        from profiling.summary import SUMMARY_JSON

        return SUMMARY_JSON

    def config(self):
        from prep.models import resolve_model
        from profiling import ProfileConfig

        return ProfileConfig(
            task=self.task, model_dir=str(resolve_model(self.model_dir).resolve()),
            features_dir=str(features.resolve()) if (features := self.resolved_features_dir()) else None,
            world_size=self.world_size, warmup_steps=self.warmup_steps, active_steps=self.active_steps,
            precision=self.precision, global_batch_size=self.global_batch_size,
            per_device_batch_size=self.per_device_batch_size, head=self.head, backend=self.backend,
            device=self.device, scaling=self.scaling, seed=self.seed, synthetic_seq_length=self.synthetic_seq_length,
            cpu_threads_per_process=self.cpu_threads_per_process, top_k=self.top_k,
            prep_scaling_png=self.prep_scaling_png,
        )

    def run(self):
        from profiling import run_profile

        if self.complete():  # finished by an earlier run after the scheduler looked (its data was missing then)
            return
        run_profile(self.config(), get_task(self.task).train, self.ready_dir(), progress=self._report)

    def _report(self, message: str, percent: float) -> None:
        self.set_status_message(f"profile: {message}")
        self.set_progress_percentage(round(percent, 1))
