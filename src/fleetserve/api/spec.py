"""The LLMDeployment API, defined once: the CRD schema, `fleetserve render`, the operator and the autoscaler all
read and write these models.

Each CEL rule in the CRD is declared here next to the model it guards, together with a Python predicate that
means the same thing, so the apiserver and our own validation can never disagree silently.
"""

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "fleetserve.io"
VERSION = "v1alpha1"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAME = "llmd"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_ENGINE_IMAGE = "ghcr.io/fleetserve/engine:0.1.0"

# Kubernetes resource.Quantity, as the apiserver's own regex accepts it.
QUANTITY_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE])?$"
MODEL_SOURCE_PATTERN = r"^(builtin://[a-z0-9][a-z0-9.-]*|hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+)$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry and its Python twin (`holds` gets the validated model)."""

    rule: str
    message: str
    field_path: str
    holds: Callable[[Any], bool]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self):
        for cel in self.cel_rules:
            if not cel.holds(self):
                raise ValueError(f"{cel.field_path}: {cel.message}")
        return self


class ModelRef(_Model):
    source: str = Field(
        pattern=MODEL_SOURCE_PATTERN,
        description="Where the weights come from: builtin://<name>, hf://<org>/<name> or pvc://<claim>/<path>.",
    )
    revision: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._/-]+$", description="Hugging Face revision: branch, tag or commit (hf:// only).")


class EngineSpec(_Model):
    image: str = Field(default=DEFAULT_ENGINE_IMAGE, min_length=1, description="Engine container image.")
    max_num_seqs: int = Field(default=256, ge=1, le=4096, description="Most sequences decoded together.")
    max_model_len: int = Field(default=8192, ge=16, le=1_048_576, description="Longest prompt plus output, in tokens.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Share of GPU memory the engine may use.")
    served_model_name: str | None = Field(default=None, min_length=1, description="Model name in the OpenAI API; defaults to metadata.name.")
    drain_seconds: int = Field(default=30, ge=0, le=3600, description="How long a stopping pod keeps serving admitted requests.")
    extra_args: list[str] = Field(default=[], description="Appended to the engine command line as-is.")


class GpuSpec(_Model):
    type: str | None = Field(default=None, pattern=LABEL_VALUE_PATTERN, max_length=63, description="GPU product, matched against the node label nvidia.com/gpu.product.")
    count_per_replica: int | None = Field(default=None, ge=1, le=1024, description="GPUs per replica; defaults to parallelism.tensor.")


class ResourcesSpec(_Model):
    gpu: GpuSpec | None = Field(default=None, description="Omit to run on CPU (tiny models, tests).")
    cpu: str = Field(default="4", pattern=QUANTITY_PATTERN, description="CPU request per pod (a Kubernetes quantity).")
    memory: str = Field(default="16Gi", pattern=QUANTITY_PATTERN, description="Memory request and limit per pod.")


class Parallelism(_Model):
    tensor: int = Field(default=1, ge=1, le=1024, description="Tensor-parallel size (ranks that hold one copy of the model).")


class Replicas(_Model):
    cel_rules: ClassVar = (CelRule("self.min <= self.max", "min must not exceed max", "spec.replicas", lambda r: r.min <= r.max),)
    min: int = Field(default=1, ge=0, le=1000, description="Replicas kept even when idle (may be 0).")
    max: int = Field(default=1, ge=0, le=1000, description="Most replicas the autoscaler may run.")


class Slo(_Model):
    ttft_seconds: float = Field(default=1.0, gt=0, description="Time-to-first-token target.")
    itl_seconds: float = Field(default=0.1, gt=0, description="Inter-token latency target.")
    percentile: float = Field(default=95, ge=50, lt=100, description="Percentile the targets apply to.")


class Autoscaling(_Model):
    enabled: bool = False
    slo: Slo = Slo()
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    scale_down_delay_seconds: int = Field(default=300, ge=0, le=86400)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class OnDemandCapacity(_Model):
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Replicas always kept on on-demand nodes.")
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []


class SpotCapacity(_Model):
    enabled: bool = False
    max_share: float = Field(default=0.8, ge=0, le=1, description="Largest share of replicas placed on spot nodes.")
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []


class Capacity(_Model):
    gpus_per_node: int = Field(default=8, ge=1, le=64, description="GPUs on one node; larger tensor groups span nodes.")
    on_demand: OnDemandCapacity = OnDemandCapacity()
    spot: SpotCapacity = SpotCapacity()


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class Serving(_Model):
    port: int = Field(default=8000, ge=1024, le=65535, description="Engine HTTP port (OpenAI API, /health, /metrics).")
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description="Secret key holding the bearer token clients must send.")


def _gpus_per_replica(spec: "LLMDeploymentSpec") -> int:
    gpu = spec.resources.gpu
    return 0 if gpu is None else (gpu.count_per_replica or spec.parallelism.tensor)


class LLMDeploymentSpec(_Model):
    cel_rules: ClassVar = (
        CelRule(
            "self.parallelism.tensor == 1 || has(self.resources.gpu)",
            "tensor parallelism needs GPUs: set resources.gpu",
            "spec.parallelism.tensor",
            lambda s: s.parallelism.tensor == 1 or s.resources.gpu is not None,
        ),
        CelRule(
            "!has(self.resources.gpu) || !has(self.resources.gpu.countPerReplica)"
            " || self.resources.gpu.countPerReplica % self.parallelism.tensor == 0",
            "parallelism.tensor must divide resources.gpu.countPerReplica",
            "spec.resources.gpu.countPerReplica",
            lambda s: s.resources.gpu is None or _gpus_per_replica(s) % s.parallelism.tensor == 0,
        ),
        CelRule(
            "!has(self.model.revision) || self.model.source.startsWith('hf://')",
            "revision applies to hf:// sources only",
            "spec.model.revision",
            lambda s: s.model.revision is None or s.model.source.startswith("hf://"),
        ),
    )
    model: ModelRef
    engine: EngineSpec = EngineSpec()
    resources: ResourcesSpec = ResourcesSpec()
    parallelism: Parallelism = Parallelism()
    replicas: Replicas = Replicas()
    autoscaling: Autoscaling = Autoscaling()
    capacity: Capacity = Capacity()
    serving: Serving = Serving()

    @property
    def gpus_per_replica(self) -> int:
        return _gpus_per_replica(self)


class CapacityReplicas(_Model):
    desired: int = 0
    ready: int = 0
    pending: int = 0


class ReplicaStatus(_Model):
    desired: int = 0
    ready: int = 0
    summary: str = Field(default="0/0", description="ready/desired, for kubectl get.")
    on_demand: CapacityReplicas = CapacityReplicas()
    spot: CapacityReplicas = CapacityReplicas()


class Condition(_Model):
    type: Literal["Ready", "Progressing", "Degraded", "InsufficientCapacity", "SpotPreempted", "ScalingActive"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str


class AutoscalerPlan(_Model):
    """Written by the autoscaler; the operator re-renders workloads with these counts."""

    desired_on_demand: int = Field(ge=0)
    desired_spot: int = Field(ge=0)
    reason: str = ""
    time: str = ""


class ScalingDecision(_Model):
    """One entry of the autoscaler's decision history (`from` is a Python keyword, hence the alias)."""

    time: str
    from_: int = Field(alias="from")
    to: int
    on_demand: int
    spot: int
    reason: str


class SpotPreemptions(_Model):
    """What the autoscaler has learned about spot reclaims, kept in the status so a restart keeps it."""

    observed: int = Field(default=0, ge=0)
    spot_replica_hours: float = Field(default=0, ge=0)
    rate_per_replica_hour: float = Field(default=0, ge=0)
    time: str = ""


class LLMDeploymentStatus(_Model):
    observed_generation: int | None = None
    replicas: ReplicaStatus = ReplicaStatus()
    conditions: list[Condition] = []
    endpoint: str | None = Field(default=None, description="In-cluster OpenAI-compatible base URL.")
    selector: str | None = Field(default=None, description="Label selector of the serving pods (scale subresource).")
    autoscaler: AutoscalerPlan | None = None
    scaling_decisions: list[ScalingDecision] = Field(default=[], max_length=5)
    spot_preemptions: SpotPreemptions | None = None



def parse_status(body: dict) -> LLMDeploymentStatus:
    """An LLMDeployment's status, typed (the apiserver checked it against the schema generated from these models)."""
    return LLMDeploymentStatus.model_validate(body.get("status") or {})


def status_fields(status: LLMDeploymentStatus) -> dict:
    """The fields set on `status`, as the JSON merge patch that writes exactly those and leaves the rest alone."""
    return status.model_dump(by_alias=True, exclude_unset=True)

# Children are named <name>-on-demand-<index> and their pods add "-<ordinal>" plus a revision hash: 63 in all.
MAX_NAME_LENGTH = 36
NAME_RULE = CelRule(
    f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    f"must be at most {MAX_NAME_LENGTH} characters so child and pod names fit Kubernetes limits",
    "metadata.name",
    lambda body: len(body.get("metadata", {}).get("name", "")) <= MAX_NAME_LENGTH,
)


class InvalidSpec(ValueError):
    """The spec breaks the schema; the message names each offending field as a dotted path."""


def parse_spec(spec: dict) -> LLMDeploymentSpec:
    try:
        return LLMDeploymentSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidSpec(describe_errors(error)) from None


def parse_resource(body: dict) -> LLMDeploymentSpec:
    """Validate a whole LLMDeployment (identity, metadata and spec) the way the apiserver would."""
    if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
        raise InvalidSpec(f"apiVersion/kind: expected {API_VERSION} {KIND}, got {body.get('apiVersion')} {body.get('kind')}")
    if not body.get("metadata", {}).get("name"):
        raise InvalidSpec("metadata.name: required")
    if not NAME_RULE.holds(body):
        raise InvalidSpec(f"{NAME_RULE.field_path}: {NAME_RULE.message}")
    if not isinstance(body.get("spec"), dict):
        raise InvalidSpec("spec: required")
    return parse_spec(body["spec"])


def describe_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(["spec", *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(message if message.startswith("spec.") else f"{path}: {message}")
    return "; ".join(lines)


def all_cel_rules() -> list[tuple[type[_Model], CelRule]]:
    """Every model with CEL rules, for the CRD generator and the tests that pin both halves of each rule."""
    models = [LLMDeploymentSpec, Replicas]
    return [(model, rule) for model in models for rule in model.cel_rules]
