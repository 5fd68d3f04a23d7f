"""Sampling policies: where in parameter space the next cycle's images are generated."""

from policies.base import Policy, PolicyError, PolicyView, Proposal
from policies.lhs import LatinHypercubePolicy
from policies.mix import MixPolicy
from policies.random import RandomPolicy
from policies.registry import available_policies, get_policy, parse_spec, register_alias, register_policy
from policies.sobol import SobolPolicy
from policies.worst import METRIC_HIGHER_IS_BETTER, WorstPolicy

__all__ = [
    "Policy", "PolicyError", "PolicyView", "Proposal",
    "available_policies", "get_policy", "parse_spec", "register_alias", "register_policy",
    "LatinHypercubePolicy", "MixPolicy", "RandomPolicy", "SobolPolicy", "WorstPolicy",
    "METRIC_HIGHER_IS_BETTER",
]
