"""Policies: loading and validation, route matching, requirement trees.

Compile-time data: a ``CompiledPolicy`` is built here (authenticators included) and
evaluated by ``authz.engine``; nothing in ``policy/`` imports the engine, a front door
or a concrete store (tests/test_layout.py).
"""

from authz.policy.errors import PolicyError, PolicyProblem
from authz.policy.loader import CompiledPolicy, compile_policy, load_policy, read_policy_dir

__all__ = ["CompiledPolicy", "PolicyError", "PolicyProblem", "compile_policy", "load_policy",
           "read_policy_dir"]
