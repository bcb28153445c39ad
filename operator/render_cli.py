"""`fleetserve render -f CR.yaml`: print the manifests the operator would apply, as a reviewable dry run."""

import argparse
import sys
from pathlib import Path

import yaml

from fleetserve.api.placement import ImpossibleShape, desired_split
from fleetserve.api.spec import KIND, InvalidSpec, parse_resource, parse_status
from fleetserve.operator.render import ClusterFeatures, render_children


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True,
                        help="YAML file with LLMDeployments ('-' for stdin); other objects in it (a Secret) are skipped")
    parser.add_argument("--pod-monitor", action="store_true",
                        help="render the PodMonitor too, as the operator does where the Prometheus Operator CRD exists")
    parser.add_argument("--leader-worker-set", action="store_true",
                        help="render multi-node groups as LeaderWorkerSets, as the operator does where that CRD exists")


def render_manifests(body: dict, features: ClusterFeatures) -> list[dict]:
    """Validate the CR like the apiserver would, then render; raises InvalidSpec or ImpossibleShape."""
    body = {**body, "metadata": {"namespace": "default", **body.get("metadata", {})}}
    spec = parse_resource(body)
    return render_children(body, spec, desired_split(spec, parse_status(body).autoscaler), features)


def llm_deployments(text: str) -> list[dict]:
    """The LLMDeployments in a YAML stream. An example ships with what it needs (a Secret): kubectl applies those
    as they are, the operator renders only these. Raises yaml.YAMLError, or ValueError for a non-object document."""
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    if not all(isinstance(d, dict) for d in documents):
        raise ValueError("must hold Kubernetes objects")
    return [d for d in documents if d.get("kind") == KIND]


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text(encoding="utf-8")
        bodies = llm_deployments(text)
    except OSError as error:
        print(f"error: can't read {args.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as error:
        print(f"error: {args.filename} is not valid YAML: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {args.filename} {error}", file=sys.stderr)
        return 2
    if not bodies:
        print(f"error: {args.filename} holds no {KIND}", file=sys.stderr)
        return 2
    features = ClusterFeatures(pod_monitor=args.pod_monitor, leader_worker_set=args.leader_worker_set)
    try:
        manifests = [m for body in bodies for m in render_manifests(body, features)]
    except (InvalidSpec, ImpossibleShape) as error:
        print(f"error: invalid LLMDeployment: {error}", file=sys.stderr)
        return 1
    print(yaml.safe_dump_all(manifests, sort_keys=False, width=120), end="")
    return 0
