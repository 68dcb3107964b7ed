"""Datasheets (Gebru et al.) and Hugging Face dataset cards, filled from what the pipeline measured."""
