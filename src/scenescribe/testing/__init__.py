"""Test and benchmark scaffolding, not used by a normal run.

``fakes`` holds a small fake backend of each kind (no model files) for orchestration tests.
``stand_ins`` builds each captioner's full-size architecture and a processor in code (what
``--random-weights`` runs), ``code_tokenizers`` the tokenizers they use, ``tiny`` and
``phi3v_tiny`` tiny random-weight checkpoints saved the way real ones are.
"""
