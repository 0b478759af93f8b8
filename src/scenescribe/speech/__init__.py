"""Speech backends; see base.py for the interface."""
