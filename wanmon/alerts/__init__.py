"""Alerting: a pure engine (engine.py), emails composed from templates (mail.py)."""
