"""Evaluation of a frozen or fine-tuned encoder; it sees encoders, never methods."""
