"""Evaluate a compiled policy against a request: decide, trace, explain."""

from authz.engine.decide import DecisionEngine

__all__ = ["DecisionEngine"]
