"""Evaluate a compiled policy against a request: decide (optionally traced), explain,
and run operators' policy test files. Imports ``policy/`` and below, never a front door."""

from authz.engine.decide import DecisionEngine, Trace

__all__ = ["DecisionEngine", "Trace"]
