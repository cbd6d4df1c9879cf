"""Evaluation: systems answering the same example sets, metrics, diagnosis of the alignment, and the demo."""
