"""Feature generation: a task's raw files -> memory-mappable Arrow features + manifest.json.

The engine is task-agnostic: :mod:`prep.pool` (the multiprocessing pool), :mod:`prep.stage`
(one run into an atomic folder with its manifest), :mod:`prep.features` (reading). Each task
brings its reader and chunk converter (``tasks/<name>/prep.py``). Entry points:
``python -m prep <task> INPUT OUT ...`` for any registered task, and the short spellings
``python -m prep.squad`` / ``python -m prep.gap``.
"""
