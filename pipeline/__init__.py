"""bertflow's Luigi DAG: ``luigi --module pipeline <Task> ...``.

Every task here is a thin wrapper: its ``run()`` calls one plain function in prep/, train/,
eval/ or profiling/, and its output lives under a content-addressed path (pipeline.artifacts).
"""

from pipeline.artifacts import bertflow
from pipeline.data import DataFile, inputs
from pipeline.evaluate import Evaluation
from pipeline.finetune import FineTuned
from pipeline.fullrun import FullRun, GapFineTuned, SquadFineTuned
from pipeline.prep_tasks import GapFeatures, SquadFeatures
from pipeline.profile import Profile
from pipeline.results import GapResults

__all__ = ["bertflow", "inputs", "DataFile", "GapFeatures", "SquadFeatures", "FineTuned", "GapFineTuned",
           "SquadFineTuned", "Evaluation", "Profile", "FullRun", "GapResults"]
