"""Distillation: the projection heads and losses that map student states onto the teacher's, and the
decoder probe that reads the student's states with the teacher's own decoder."""
