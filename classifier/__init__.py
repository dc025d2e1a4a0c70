"""Complexity classifier: calibrated P(a cheap single pass falls short) + tier + signals."""

from classifier.features import last_user_text
from classifier.model import Classification, Classifier

__all__ = ["Classifier", "Classification", "last_user_text"]
