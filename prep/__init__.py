"""Feature generation: raw SQuAD / GAP files -> memory-mappable Arrow features + manifest.json.

Entry points: ``python -m prep.squad`` and ``python -m prep.gap``; read results with
:func:`prep.features.open_features`.
"""
