"""Text classification from a labelled CSV / TSV / JSONL with token folding (staging; moves to tasks/textclass/)."""
