"""Policies: loading and validation, route matching, requirement trees."""

from authz.policy.errors import PolicyError, PolicyProblem
from authz.policy.loader import CompiledPolicy, compile_policy, load_policy, read_policy_dir

__all__ = ["CompiledPolicy", "PolicyError", "PolicyProblem", "compile_policy", "load_policy",
           "read_policy_dir"]
