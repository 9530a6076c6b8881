"""Sinks: where finished observations are recorded."""
