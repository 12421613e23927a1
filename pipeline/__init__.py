"""bertflow's Luigi DAG: ``luigi --module pipeline <Task> ...``.

Every task here is a thin wrapper: its ``run()`` calls one plain function in prep/, train/,
eval/ or profiling/, and its output lives under a content-addressed path (pipeline.artifacts).
Per registered task (tasks/<name>/) pipeline.generated makes ``<Task>Features``,
``<Task>FineTuned`` and ``<Task>Evaluation`` (each with its own luigi.cfg section), and the
task's entry: ``<Task>Results`` (heads x seeds table), e.g. ``SquadFeatures``, ``GapFineTuned``,
``RaceEvaluation``, ``GapResults``; a task whose data the user brings gets its entry task instead
(``TextClassification``: pipeline/userdata.py), and a task with a benchmark suite its results
entry (``GlueResults``: pipeline/suite.py). ``Predict`` applies a finished run to a new file
(pipeline/predict.py).
"""

from pipeline import console  # noqa: F401 - registers the start / end lines
from pipeline.artifacts import bertflow
from pipeline.data import DataFile, inputs
from pipeline.evaluate import Evaluation
from pipeline.finetune import FineTuned
from pipeline.fullrun import FullRun
from pipeline.generated import *  # noqa: F401,F403 - the per-task classes: GapFeatures, GapFineTuned, ...
from pipeline.generated import GENERATED
from pipeline.predict import Predict
from pipeline.profile import Profile
from pipeline.results import Results
from pipeline.splits import Splits
from pipeline.suite import SuiteResults
from pipeline.sweep import Sweep, SweepTrial
from pipeline.userdata import UserDataRun

__all__ = ["bertflow", "inputs", "DataFile", "FineTuned", "Evaluation", "Profile", "FullRun", "Results", "Splits",
           "UserDataRun", "Sweep", "SweepTrial", "SuiteResults", "Predict", *GENERATED]
