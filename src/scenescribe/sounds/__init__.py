"""Sounds backends; see base.py for the interface."""
