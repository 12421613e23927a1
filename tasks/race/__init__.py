"""RACE reading comprehension (four options per question), as one task on the seam (see tasks/spec.py).

Modules: ``read`` (the release folder tree or JSON Lines; clear errors, skipped questions with
reasons), ``prep`` (one row per question, four passage+question+option sequences laid out by the
tokenizer; ``python -m prep.race``), ``model`` (the ``mc`` head, saved as
``AutoModelForMultipleChoice``, and DUMA's dual multi-head co-attention), ``metrics`` (accuracy on
middle / high / all, answers.json), ``evaluate``, ``report``, ``score`` (re-scoring, ensembles),
``predict`` (questions without answers -> answers.json).

Data: RACE has no per-split official download; its authors publish RACE.tar.gz behind a licence
form (non-commercial research use) at the address below. The checksums are those of the JSON
Lines form of that release described in ../shared/data/race/README.md (one article file per
line, middle then high, by number). The URLs only name the files: nothing is served there, so
DataFile's download fails with its message, and a user points ``[inputs] race_train`` /
``race_dev`` / ``race_test`` at the files (luigi.offline.cfg does) or puts them in data_dir.
"""

from __future__ import annotations

from tasks.race import evaluate, model, predict, prep, report, score
from tasks.race.read import RaceFormatError, input_digest
from tasks.spec import DataRole, EvalSpec, FullRunPlan, OfficialFile, PredictSpec, PrepSpec, TaskSpec, TrainSpec

_RELEASE = "http://www.cs.cmu.edu/~glai1/data/race/"
DATA_FILES = {
    "race-train": OfficialFile(_RELEASE + "train.jsonl",
                               "sha256:8d9b5e66db7b5858bfdc250ddc92aa1e07ed94bf96b456a22243a5bc3e2a111e"),
    "race-dev": OfficialFile(_RELEASE + "dev.jsonl",
                             "sha256:d0518af08400eefb243033ba13491e4a9b5a0bd05c9a4dc98a0c6479335c325d"),
    "race-test": OfficialFile(_RELEASE + "test.jsonl",
                              "sha256:a81e4210ab4fc1b5d519fe80eff2855fc0991bd9fd5ab804a6e3c04701fe32d7"),
}


def _role(data: str, flag: str, what: str) -> DataRole:
    return DataRole(data, subset_flag=flag, subset_field="max_questions",
                    subset_help=f"first N questions of RACE {what} (0: all)")


SPEC = TaskSpec(
    name="race",
    description="RACE multiple choice: accuracy on middle / high / all, answers.json",
    prep=PrepSpec(config=prep.RacePrepConfig, prepare=prep.prepare_race, summarize=prep.summarize,
                  input_errors=(RaceFormatError,),
                  input_help="RACE JSON Lines file, split folder (RACE/dev) or release root (with --split)",
                  chunk_param="articles_per_chunk", chunk_help="articles per pool task"),
    train=TrainSpec(
        heads=model.HEADS,
        default_head="mc",
        build_model=model.build_model,
        collate=model.collate_race,
        loss=model.loss,
        eval_counts=model.eval_counts,
        synthetic_features=model.synthetic_race_table,
        encoder_pooler=True,
        sequences_per_row=4,
        save_pretrained=model.save_multiple_choice,
    ),
    eval=EvalSpec(
        config=evaluate.RaceEvalConfig,
        evaluate=evaluate.evaluate,
        metric_rows=report.metric_rows,
        report_sections=report.report_sections,
        headline=report.headline,
        aggregate_metrics=report.AGGREGATE_METRICS,
        metric_labels=report.METRIC_LABELS,
        metric_digits={"log_loss": 3},
        data_digest=input_digest,
        ensemble=score.ensemble,
        score_file=score.score_file,
        score_file_args=score.add_score_args,
        predict=PredictSpec(prep_config=predict.prep_config, predict=predict.predict, write_inputs=predict.write_inputs,
                            options=predict.RacePredictOptions,
                            input_help="RACE JSON Lines (or split folder) whose articles need no answers"),
    ),
    data_files=DATA_FILES,
    plan=FullRunPlan(train=_role("race-train", "train_questions", "train"),
                     select=_role("race-dev", "dev_questions", "dev"),
                     test=_role("race-test", "test_questions", "test")),
)
