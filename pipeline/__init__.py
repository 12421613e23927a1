"""bertflow's Luigi DAG: ``luigi --module pipeline <Task> ...``.

Every task here is a thin wrapper: its ``run()`` calls one plain function in prep/, train/,
eval/ or profiling/, and its output lives under a content-addressed path (pipeline.artifacts).
Per registered task (tasks/<name>/) three classes are generated: ``<Task>Features``,
``<Task>FineTuned`` (its own luigi.cfg section) and ``<Task>Results`` (heads x seeds table),
e.g. ``SquadFeatures``, ``GapFineTuned``, ``GapResults``; a task whose data the user brings
gets its entry task instead (``TextClassification``: pipeline/userdata.py), and a task with a
benchmark suite its results entry (``GlueResults``: pipeline/suite.py).
"""

from pipeline import console  # noqa: F401 - registers the start / end lines
from pipeline.artifacts import bertflow
from pipeline.data import DataFile, inputs
from pipeline.evaluate import Evaluation
from pipeline.finetune import FINETUNED, FineTuned
from pipeline.fullrun import FullRun
from pipeline.prep_tasks import FEATURES
from pipeline.profile import Profile
from pipeline.results import RESULTS, Results
from pipeline.splits import Splits
from pipeline.suite import SUITES, SuiteResults
from pipeline.sweep import Sweep, SweepTrial
from pipeline.userdata import ENTRIES, UserDataRun

_GENERATED = {cls.__name__: cls for group in (FEATURES, FINETUNED, RESULTS, ENTRIES, SUITES) for cls in group.values()}
globals().update(_GENERATED)

__all__ = ["bertflow", "inputs", "DataFile", "FineTuned", "Evaluation", "Profile", "FullRun", "Results", "Splits",
           "UserDataRun", "Sweep", "SweepTrial", "SuiteResults",
           *_GENERATED]
