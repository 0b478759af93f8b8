"""Test support shipped apart from the pipeline: fake backends and tiny media, no model files."""
