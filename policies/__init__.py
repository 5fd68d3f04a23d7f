"""Sampling policies: where in parameter space the next cycle's images are generated."""

from policies.anchored import AnchoredPolicy, anchors_table
from policies.base import Policy, PolicyError, PolicyView, Proposal
from policies.lhs import LatinHypercubePolicy
from policies.mix import MixPolicy
from policies.near import NearPolicy
from policies.random import RandomPolicy
from policies.registry import available_policies, get_policy, parse_spec, register_alias, register_policy
from policies.sobol import SobolPolicy
from policies.worst import METRIC_HIGHER_IS_BETTER, WorstPolicy

__all__ = [
    "Policy", "PolicyError", "PolicyView", "Proposal",
    "available_policies", "get_policy", "parse_spec", "register_alias", "register_policy",
    "AnchoredPolicy", "LatinHypercubePolicy", "MixPolicy", "NearPolicy", "RandomPolicy", "SobolPolicy", "WorstPolicy",
    "METRIC_HIGHER_IS_BETTER", "anchors_table",
]

# The built-in policies; a new one is one module and one line here.
register_policy("random", RandomPolicy)
register_policy("sobol", SobolPolicy)
register_policy("lhs", LatinHypercubePolicy)
register_policy("worst", WorstPolicy)
register_policy("mix", MixPolicy)
register_policy("near", NearPolicy)
register_policy("anchored", AnchoredPolicy)
register_alias("worst10", "worst:k=0.1,m=10,radius=0.05")
# The paper's adaptive sampling as published (§3.3): worst 10 % × 10 variations, only grain
# contrast and boundary thickness varied (dimensions of the grains generator's space).
register_alias("paper", "worst:k=0.1,m=10,radius=0.05,dims=grain_contrast|boundary_thickness")
# Its control: the same variations around randomly chosen validation samples.
register_alias("near-random", "near:k=0.1,m=10,radius=0.05")
