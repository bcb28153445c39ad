"""The one `fleetserve` command. Each subcommand lives in the module that owns its job.

Modules are imported only when their subcommand runs, so the operator side works without torch installed.
Each module exposes `add_arguments(parser)` and `run(args) -> int`.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "serve": ("fleetserve.engine.serve_cli", "run the inference engine with its OpenAI-compatible HTTP server"),
    "bench": ("fleetserve.engine.bench", "benchmark the engine's server against HF transformers on this machine"),
    "router": ("fleetserve.router.cli", "run the OpenAI-compatible router in front of engine replicas"),
    "operator": ("fleetserve.operator.cli", "run the Kopf operator that reconciles LLMDeployments"),
    "crd": ("fleetserve.api.crd", "generate the LLMDeployment CRD YAML from the pydantic spec"),
    "render": ("fleetserve.operator.render_cli", "print the manifests the operator would apply for an LLMDeployment"),
    "simulate": ("fleetserve.autoscaler.simulate_cli", "replay a request trace and a spot trace against autoscaling policies"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="fleetserve", description="Run LLMs on Kubernetes.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    # Parse only the subcommand name first, so each module builds its own arguments lazily.
    known, _ = parser.parse_known_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[known.command][0])
    sub = argparse.ArgumentParser(prog=f"fleetserve {known.command}", description=SUBCOMMANDS[known.command][1])
    module.add_arguments(sub)
    return module.run(sub.parse_args(argv[1:])) or 0
