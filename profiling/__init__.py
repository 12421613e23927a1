"""Where a training step's time goes: Nsight Systems or torch.profiler over steady-state steps.

    python -m profiling --task squad --world-size 2 --out runs/profile-squad      # synthetic features
    python -m profiling --task gap --features runs/features/gap-dev-<hash> --out runs/profile-gap

:func:`run_profile` is the stage's one function (the Luigi task ``pipeline.Profile`` calls it);
see ``docs/profiling.md`` for what the summary's numbers mean.
"""

from profiling.config import ProfileConfig
from profiling.run import choose_backend, run_profile
from profiling.summary import SUMMARY_JSON, SUMMARY_MD, render_markdown

__all__ = ["ProfileConfig", "run_profile", "choose_backend", "render_markdown", "SUMMARY_JSON", "SUMMARY_MD"]
