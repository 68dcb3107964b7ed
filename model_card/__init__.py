"""Model card and openness audit. Importable without torch: auditors install only this."""
