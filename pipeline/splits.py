"""``Splits``: a task's user-supplied data file(s) split into train / validation / test files.

The artifact ``<runs_dir>/splits/<task>-<hash>`` holds ``train.<ext>``, ``validation.<ext>``,
``test.<ext>`` and ``manifest.json`` (written last, the folder appearing in one rename); the hash
covers the split settings and the sha256 of every input file, so an edited file or a new seed
gives new splits and re-runs what depends on them. What a split is (stratified, duplicates kept
together, ...) is the task's ``user_data.write_splits``.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, content_hash
from tasks import get_task, task_names
from tasks.spec import UserDataPlan

SPLITS = ("train", "validation", "test")
SCHEMA_VERSION = 1


class Splits(Artifact):
    task = luigi.ChoiceParameter(choices=task_names())
    config = luigi.DictParameter(description="the task's split-config fields (files, columns, ratios, seed)")

    @property
    def plan(self):
        plan = get_task(self.task).plan
        if not isinstance(plan, UserDataPlan):
            raise ValueError(f"task {self.task} takes no user data files")
        return plan

    def split_config(self):
        return self.plan.split_config(**dict(self.config))

    def input_files(self) -> dict[str, Path]:
        return {name: Path(self.config[name]) for name in self.plan.input_fields if self.config.get(name)}

    def folder_kind(self) -> str:
        return f"splits/{self.task}"

    def name_payload(self) -> dict:
        # The user's own files, never made by an upstream task: missing is an error, not pending.
        missing = [str(path) for path in self.input_files().values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.task}: input file not found: {', '.join(missing)}")
        return {"config": dict(self.config), "schema_version": SCHEMA_VERSION,
                "inputs_sha256": {name: content_hash(path) for name, path in self.input_files().items()}}

    def split_path(self, split: str) -> Path:
        return self.out_dir / f"{split}.{self.plan.split_suffix}"

    def run(self):
        self.plan.write_splits(self.split_config(), self.out_dir)  # the writer publishes the folder atomically
