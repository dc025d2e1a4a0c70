"""Offline tooling (reads files): data/labels, training/export, evaluation, test fixture."""
