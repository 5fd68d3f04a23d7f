"""Registry: spec parsing, names round-trip, aliases, and an error for every bad setting."""

from __future__ import annotations

import pytest

from policies import Policy, PolicyError, RandomPolicy, available_policies, get_policy, parse_spec, registry


def test_available_lists_names_and_aliases() -> None:
    assert available_policies() == ["anchored", "lhs", "mix", "near", "near-random", "paper", "random", "sobol", "worst",
                                    "worst10"]


@pytest.mark.parametrize("spec, name", [
    ("random", "random"),
    ("  sobol ", "sobol:scramble=true,seed=0"),
    ("sobol:scramble=no,seed=12", "sobol:scramble=false,seed=12"),
    ("lhs", "lhs:scramble=true"),
    ("worst10", "worst:k=0.1,m=10,radius=0.05"),
    ("worst", "worst:k=0.1,m=10,radius=0.05"),
    ("worst: k = 0.25 , dims = thickness|shape, metric=boundary_f1, split=val",
     "worst:k=0.25,m=10,radius=0.05,dims=thickness|shape,metric=boundary_f1"),
    ("worst:k=1,m=3,radius=1e-3,split=train", "worst:k=1,m=3,radius=0.001,split=train"),
    ("mix:worst10=0.7,random=0.3", "mix:worst10=0.7,random=0.3"),
    ("paper", "worst:k=0.1,m=10,radius=0.05,dims=grain_contrast|boundary_thickness"),
    ("near-random", "near:k=0.1,m=10,radius=0.05"),
    ("near:k=0.2,dims=thickness", "near:k=0.2,m=10,radius=0.05,dims=thickness"),
    ("mix:near-random=0.5,worst10=0.5", "mix:near-random=0.5,worst10=0.5"),
])
def test_canonical_names_round_trip(spec: str, name: str) -> None:
    policy = get_policy(spec)
    assert policy.name == name
    assert get_policy(policy.name) == policy
    assert isinstance(policy, Policy)


def test_parse_spec() -> None:
    assert parse_spec("worst:k=0.1,dims=a|b") == ("worst", {"k": "0.1", "dims": "a|b"})
    assert parse_spec("random") == ("random", {})


BAD = [
    # spec, fragments the message must contain
    ("worst:k=2", ["k=2", "out of range", "(0, 1]"]),
    ("worst:k=0", ["k=0", "out of range", "(0, 1]"]),
    ("worst:k=abc", ["k=abc", "not a number", "(0, 1]"]),
    ("worst:k=nan", ["k=nan", "(0, 1]"]),
    ("worst:m=0", ["m=0", "out of range", "integer >= 1"]),
    ("worst:m=1.5", ["m=1.5", "not an integer", "integer >= 1"]),
    ("worst:radius=-1", ["radius=-1", "out of range", "(0, 1]"]),
    ("worst:radius=0", ["radius=0", "(0, 1]"]),
    ("worst:radius=1.5", ["radius=1.5", "(0, 1]"]),
    ("worst:foo=1", ["unknown setting foo=1", "k, m, radius, dims, metric, split"]),
    ("worst:metric=dice", ["metric=dice", "accuracy", "boundary_f1", "error", "iou", "loss"]),
    ("worst:dims=", ["dims=", "empty name"]),
    ("worst:dims=a|a", ["dims=a|a", "repeats"]),
    ("worst:split=", ["split=", "split name"]),
    ("sobol:scramble=maybe", ["scramble=maybe", "true or false"]),
    ("sobol:seed=-1", ["seed=-1", "out of range", "[0, "]),
    ("sobol:seed=x", ["seed=x", "not an integer"]),
    ("sobol:dims=a", ["unknown setting dims=a", "scramble, seed"]),
    ("lhs:scramble=2", ["scramble=2", "true or false"]),
    ("random:k=1", ["unknown setting k=1", "(none)"]),
    ("mix", ["needs sub-policies", "mix:worst10=0.7,random=0.3"]),
    ("mix:worst10=0.7,random=0.2", ["worst10=0.7,random=0.2", "sum to 0.9", "expected a sum of 1"]),
    ("mix:worst10=1.2,random=-0.2", ["worst10=1.2", "(0, 1]"]),
    ("mix:worst10=0.7,random=abc", ["random=abc", "not a number"]),
    ("mix:worst10=0.5,grid=0.5", ["'grid'", "setting-free", "lhs, near, near-random, paper, random, sobol, worst, worst10"]),
    ("mix:worst10=0.5,mix=0.5", ["'mix'", "setting-free"]),
    ("mix:worst:k=0.2=0.5,random=0.5", ["'worst:k'", "setting-free"]),
    ("bogus", ["unknown policy 'bogus'", "lhs, mix, near, near-random, paper, random, sobol, worst, worst10"]),
    ("bogus:k=1", ["unknown policy 'bogus'"]),
    ("worst10:k=0.2", ["alias 'worst10'", "takes no settings"]),
    ("", ["expected name[:key=value,...]"]),
    ("worst:", ["nothing after ':'"]),
    ("worst:k", ["'k' is not key=value"]),
    ("worst:k=0.1,k=0.2", ["'k' is given twice"]),
    ("worst:=3", ["'=3' is not key=value"]),
]


@pytest.mark.parametrize("spec, fragments", BAD, ids=[b[0] or "empty" for b in BAD])
def test_every_bad_spec_gets_a_clear_error(spec: str, fragments: list[str]) -> None:
    with pytest.raises(PolicyError) as err:
        get_policy(spec)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))
    assert isinstance(err.value, ValueError)


def test_typed_settings_are_checked_too() -> None:
    from policies import WorstPolicy

    with pytest.raises(PolicyError, match=r"k=True is not a number"):
        WorstPolicy(k=True)
    with pytest.raises(PolicyError, match=r"m=2.0 is not an integer"):
        WorstPolicy(m=2.0)
    assert WorstPolicy(dims=("thickness", "shape")).name.endswith("dims=thickness|shape")


def test_register_policy(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    class Uniform(RandomPolicy):
        """Random under another name."""

        kind = "uniform"

        @property
        def name(self) -> str:
            return self.kind

    registry.register_policy("uniform", Uniform)
    registry.register_alias("uni", "uniform")
    assert "uniform" in available_policies() and "uni" in available_policies()
    assert isinstance(get_policy("uni"), Uniform)
    with pytest.raises(PolicyError, match="already registered"):
        registry.register_policy("uniform", Uniform)
    with pytest.raises(PolicyError, match="kind is 'uniform'; they must match"):
        registry.register_policy("other", Uniform)
    with pytest.raises(PolicyError, match="expected a Policy subclass"):
        registry.register_policy("thing", object)
    with pytest.raises(PolicyError, match="unknown policy 'nothing'"):
        registry.register_alias("nada", "nothing")
    with pytest.raises(PolicyError, match="lowercase"):
        registry.register_alias("Bad Name", "random")
