"""`fleetserve render -f CR.yaml`: print the manifests the operator would apply, as a reviewable dry run."""

import argparse
import sys
from pathlib import Path

import yaml

from fleetserve.api.placement import ImpossibleShape, desired_split
from fleetserve.api.spec import InvalidSpec, parse_resource, parse_status
from fleetserve.operator.render import ClusterFeatures, render_children


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="LLMDeployment YAML file ('-' for stdin)")
    parser.add_argument("--pod-monitor", action="store_true",
                        help="render the PodMonitor too, as the operator does where the Prometheus Operator CRD exists")
    parser.add_argument("--leader-worker-set", action="store_true",
                        help="render multi-node groups as LeaderWorkerSets, as the operator does where that CRD exists")


def render_manifests(body: dict, features: ClusterFeatures) -> list[dict]:
    """Validate the CR like the apiserver would, then render; raises InvalidSpec or ImpossibleShape."""
    body = {**body, "metadata": {"namespace": "default", **body.get("metadata", {})}}
    spec = parse_resource(body)
    return render_children(body, spec, desired_split(spec, parse_status(body).autoscaler), features)


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text(encoding="utf-8")
        body = yaml.safe_load(text)
    except OSError as error:
        print(f"error: can't read {args.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as error:
        print(f"error: {args.filename} is not valid YAML: {error}", file=sys.stderr)
        return 2
    if not isinstance(body, dict):
        print(f"error: {args.filename} must hold one LLMDeployment object", file=sys.stderr)
        return 2
    try:
        manifests = render_manifests(body, ClusterFeatures(pod_monitor=args.pod_monitor, leader_worker_set=args.leader_worker_set))
    except (InvalidSpec, ImpossibleShape) as error:
        print(f"error: invalid LLMDeployment: {error}", file=sys.stderr)
        return 1
    print(yaml.safe_dump_all(manifests, sort_keys=False, width=120), end="")
    return 0
