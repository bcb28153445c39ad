"""The LLMDeployment API, defined once: the CRD schema, `fleetserve render`, the operator and the autoscaler all
read and write these models.

Each CEL rule in the CRD is declared here next to the model it guards, together with a Python predicate that
means the same thing, so the apiserver and our own validation can never disagree silently.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from fleetserve.api.group_env import RENDEZVOUS_PORT

GROUP = "fleetserve.io"
VERSION = "v1alpha1"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAME = "llmd"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes resource.Quantity, as the apiserver's own regex accepts it.
QUANTITY_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE])?$"
MODEL_SOURCE_PATTERN = r"^(builtin://[a-z0-9][a-z0-9.-]*|hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+)$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# What the apiserver accepts as names of the objects a pod refers to (Secrets, ConfigMaps, PVCs, ServiceAccounts,
# PriorityClasses, RuntimeClasses): a DNS-1123 subdomain. `[.]`, not `\.`: the same text is a CEL string literal.
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
OBJECT_NAME_PATTERN = f"^{DNS_SUBDOMAIN}$"
# A label or annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
LABEL_KEY_PATTERN = f"^({DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
MAX_LABEL_KEY_LENGTH = 317  # 253 for the prefix, "/" and 63 for the name
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)]
LabelKey = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_KEY_LENGTH, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
ConfigKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)]
# Bounds on lists and maps that CEL rules iterate: the apiserver rejects a CRD whose rules could cost too much.
MAX_LIST_ITEMS = 64
MAX_MAP_ENTRIES = 64

# Engine flags the operator renders from spec fields (or its own contract); extraArgs may not set them.
OPERATOR_FLAGS = ("--model", "--host", "--port", "--served-model-name", "--max-num-seqs", "--max-model-len",
                  "--gpu-memory-utilization", "--tensor-parallel-size", "--device", "--drain-seconds", "--api-key-file")
# Env vars the operator sets; users pick the model cache and token through spec.model instead.
RESERVED_ENV = ("HOME", "HF_HOME", "HF_TOKEN")
RESERVED_ENV_PREFIX = "FLEETSERVE_"  # the multi-node group contract (fleetserve.api.group_env)


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry and its Python twin (`holds` gets the validated model).

    `field_path` is where the fault is, relative to the model, as the CRD's `fieldPath` (".value"; "" for the model
    itself), so the apiserver and `render` both name the field.
    """

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
                raise PydanticCustomError("cel_rule", "{message}", {"message": cel.message, "field": cel.field_path})
        return self


def label_keys_rule(field: str) -> CelRule:
    """A map of labels or annotations: a CRD schema can't constrain map keys, so a rule checks them."""
    alias = to_camel(field)
    return CelRule(
        f"self.{alias}.all(k, size(k) <= {MAX_LABEL_KEY_LENGTH} && k.matches('{LABEL_KEY_PATTERN}'))",
        "keys must be label keys: an optional DNS-subdomain prefix and '/', then at most 63 of [-A-Za-z0-9_.]",
        f".{alias}",
        lambda model: all(len(k) <= MAX_LABEL_KEY_LENGTH and re.fullmatch(LABEL_KEY_PATTERN, k)
                          for k in getattr(model, field)),
    )


def _set_count(model: BaseModel, fields: tuple[str, ...]) -> int:
    return sum(getattr(model, f) is not None for f in fields)


def _exactly_one_rule(*fields: str) -> CelRule:
    aliases = [to_camel(f) for f in fields]
    return CelRule(
        " + ".join(f"(has(self.{a}) ? 1 : 0)" for a in aliases) + " == 1",
        f"set exactly one of {', '.join(aliases)}",
        "",
        lambda model: _set_count(model, fields) == 1,
    )


class SecretKeyRef(_Model):
    name: ObjectName
    key: ConfigKey


class TokenSecretRef(SecretKeyRef):
    key: ConfigKey = "token"


class ModelCache(_Model):
    cel_rules: ClassVar = (CelRule(
        "!has(self.pvcName) || !has(self.sizeLimit)",
        "sizeLimit sizes the per-pod emptyDir cache; a PVC cache has the PVC's size",
        ".sizeLimit",
        lambda c: c.pvc_name is None or c.size_limit is None,
    ),)
    pvc_name: ObjectName | None = Field(
        default=None,
        description="An existing ReadWriteMany PVC, shared by every pod, mounted at the Hugging Face cache (HF_HOME): "
                    "the first pod downloads, the others and every restart reuse it.")
    size_limit: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN,
        description="Without pvcName: the per-pod emptyDir cache's sizeLimit, also requested as ephemeral-storage "
                    "so the scheduler picks a node with room for the download.")


class ModelRef(_Model):
    cel_rules: ClassVar = (
        CelRule("!has(self.revision) || self.source.startsWith('hf://')", "revision applies to hf:// sources only",
                ".revision", lambda m: m.revision is None or m.source.startswith("hf://")),
        CelRule("!has(self.authSecretRef) || self.source.startsWith('hf://')", "authSecretRef applies to hf:// sources only",
                ".authSecretRef", lambda m: m.auth_secret_ref is None or m.source.startswith("hf://")),
    )
    source: str = Field(
        pattern=MODEL_SOURCE_PATTERN, max_length=1024,
        description="Where the weights come from: builtin://<name>, hf://<org>/<name> or pvc://<claim>/<path>.",
    )
    revision: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._/-]+$", max_length=255,
                                 description="Hugging Face revision: branch, tag or commit (hf:// only).")
    auth_secret_ref: TokenSecretRef | None = Field(
        default=None, description="Secret key holding a Hugging Face token (gated or private models), given to the "
                                  "engine as HF_TOKEN; key defaults to `token`.")
    cache: ModelCache = Field(default=ModelCache(), description="Where hf:// downloads are kept.")


class EngineSpec(_Model):
    cel_rules: ClassVar = (CelRule(
        # argparse also takes a unique prefix of a flag (--tensor-parallel), and --flag=value.
        f"self.extraArgs.all(a, !a.startsWith('--') || !{list(OPERATOR_FLAGS)}.exists(f, f.startsWith(a.split('=')[0])))",
        "must not set flags the operator renders (" + ", ".join(OPERATOR_FLAGS) + "): use the spec fields",
        ".extraArgs",
        lambda e: not any(a.startswith("--") and any(f.startswith(a.split("=")[0]) for f in OPERATOR_FLAGS)
                          for a in e.extra_args),
    ),)
    image: str | None = Field(default=None, min_length=1, max_length=1024,
                              description="Engine container image; default: the operator's own engine release.")
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096,
                                     description="Most sequences decoded together; default: the engine's.")
    max_model_len: int = Field(default=8192, ge=16, le=1_048_576, description="Longest prompt plus output, in tokens.")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1,
                                                 description="Share of GPU memory the engine may use; default: the engine's.")
    served_model_name: str | None = Field(default=None, min_length=1, max_length=255,
                                          description="Model name in the OpenAI API; defaults to metadata.name.")
    drain_seconds: int = Field(default=30, ge=0, le=3600,
                               description="How long a stopping on-demand pod keeps serving admitted requests.")
    extra_args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default=[], max_length=MAX_LIST_ITEMS, description="Appended to the engine command line as-is.")


class GpuSpec(_Model):
    type: LabelValue | None = Field(default=None, description="GPU product, matched against the node label nodeLabel.")
    node_label: LabelKey = Field(
        default="nvidia.com/gpu.product",
        description="Node label holding the GPU product: nvidia.com/gpu.product (NVIDIA GPU Feature Discovery, e.g. "
                    "NVIDIA-L4), cloud.google.com/gke-accelerator (GKE, e.g. nvidia-l4) or "
                    "karpenter.k8s.aws/instance-gpu-name (Karpenter, e.g. l4).")
    count_per_replica: int | None = Field(default=None, ge=1, le=1024, description="GPUs per replica; defaults to parallelism.tensor.")


class ResourcesSpec(_Model):
    gpu: GpuSpec | None = Field(default=None, description="Omit to run on CPU (tiny models, tests).")
    cpu: str = Field(default="4", pattern=QUANTITY_PATTERN, description="CPU request per pod (a Kubernetes quantity).")
    memory: str = Field(default="16Gi", pattern=QUANTITY_PATTERN, description="Memory request and limit per pod.")


class Parallelism(_Model):
    tensor: int = Field(default=1, ge=1, le=1024, description="Tensor-parallel size (ranks that hold one copy of the model).")


class Replicas(_Model):
    cel_rules: ClassVar = (CelRule("self.min <= self.max", "min must not exceed max", "", lambda r: r.min <= r.max),)
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
    """The rules are the apiserver's own pod validation, so a bad toleration fails here, not at pod creation."""

    cel_rules: ClassVar = (
        CelRule("self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "value must be empty when operator is Exists", ".value",
                lambda t: t.operator != "Exists" or not t.value),
        CelRule("self.operator == 'Exists' || (has(self.key) && self.key != '')",
                "an empty key (all taints) needs operator Exists", ".key",
                lambda t: t.operator == "Exists" or bool(t.key)),
        CelRule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds applies only to effect NoExecute", ".tolerationSeconds",
                lambda t: t.toleration_seconds is None or t.effect == "NoExecute"),
    )
    key: str | None = Field(default=None, max_length=MAX_LABEL_KEY_LENGTH, pattern=f"^$|{LABEL_KEY_PATTERN}")
    operator: Literal["Equal", "Exists"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class _Pool(_Model):
    cel_rules: ClassVar = (label_keys_rule("node_selector"),)
    node_selector: dict[str, LabelValue] = Field(default={}, max_length=MAX_MAP_ENTRIES)
    tolerations: list[Toleration] = Field(default=[], max_length=MAX_LIST_ITEMS)


class OnDemandCapacity(_Pool):
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Replicas always kept on on-demand nodes.")


class SpotCapacity(_Pool):
    enabled: bool = False
    max_share: float = Field(default=0.8, ge=0, le=1, description="Largest share of replicas placed on spot nodes.")
    drain_seconds: int = Field(
        default=10, ge=0, le=3600,
        description="How long a stopping spot pod keeps serving admitted requests. Kept inside the cloud's reclaim "
                    "notice: GKE gives pods 15 s of its 30 s, and the pod also sleeps 5 s before draining.")


class Capacity(_Model):
    gpus_per_node: int = Field(default=8, ge=1, le=64, description="GPUs on one node; larger tensor groups span nodes.")
    on_demand: OnDemandCapacity = OnDemandCapacity()
    spot: SpotCapacity = SpotCapacity()


class Serving(_Model):
    cel_rules: ClassVar = (CelRule(
        f"self.port != {RENDEZVOUS_PORT}",
        f"{RENDEZVOUS_PORT} is the rendezvous port of tensor-parallel groups: choose another",
        ".port",
        lambda s: s.port != RENDEZVOUS_PORT,
    ),)
    port: int = Field(default=8000, ge=1024, le=65535, description="Engine HTTP port (OpenAI API, probes, /metrics).")
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description="Secret key holding the bearer token clients must send.")


class Monitoring(_Model):
    cel_rules: ClassVar = (label_keys_rule("pod_monitor_labels"),)
    pod_monitor_labels: dict[str, LabelValue] = Field(
        default={}, max_length=MAX_MAP_ENTRIES,
        description="Extra labels on the PodMonitor, for Prometheus' podMonitorSelector "
                    "(kube-prometheus-stack selects `release: <its Helm release>`).")


class RouterResources(_Model):
    cpu: str = Field(default="500m", pattern=QUANTITY_PATTERN, description="CPU request per router pod.")
    memory: str = Field(default="1Gi", pattern=QUANTITY_PATTERN, description="Memory request and limit per router pod.")


class RouterSpec(_Model):
    enabled: bool = Field(
        default=True, description="Put the router (`fleetserve router`) in front of the engines: the Service clients "
                                  "use selects it, and it routes each request to a ready engine replica.")
    # The values of fleetserve.router.policy.POLICIES (a test keeps them equal; the API never imports the router).
    policy: Literal["prefix", "least-loaded", "round-robin"] = Field(
        default="prefix", description="prefix: to the replica most likely holding the prompt's cached prefix, under "
                                      "a load bound; least-loaded; round-robin.")
    replicas: int = Field(default=1, ge=1, le=100,
                          description="Router pods. Each learns prefix affinity only from the requests it routes.")
    resources: RouterResources = RouterResources()


class EnvKeyRef(SecretKeyRef):
    optional: bool | None = None


class FieldRef(_Model):
    field_path: str = Field(min_length=1, max_length=255)
    api_version: str | None = Field(default=None, max_length=63)


class ResourceFieldRef(_Model):
    resource: str = Field(min_length=1, max_length=63)
    container_name: str | None = Field(default=None, max_length=63)
    divisor: str | None = Field(default=None, pattern=QUANTITY_PATTERN)


class EnvVarSource(_Model):
    cel_rules: ClassVar = (_exactly_one_rule("secret_key_ref", "config_map_key_ref", "field_ref", "resource_field_ref"),)
    secret_key_ref: EnvKeyRef | None = None
    config_map_key_ref: EnvKeyRef | None = None
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None


class EnvVar(_Model):
    """A Kubernetes EnvVar, passed to the engine container as-is."""

    cel_rules: ClassVar = (
        CelRule(f"!(self.name in {list(RESERVED_ENV)}) && !self.name.startsWith('{RESERVED_ENV_PREFIX}')",
                f"{', '.join(RESERVED_ENV)} and {RESERVED_ENV_PREFIX}* are set by the operator "
                "(use spec.model.cache and spec.model.authSecretRef)", ".name",
                lambda e: e.name not in RESERVED_ENV and not e.name.startswith(RESERVED_ENV_PREFIX)),
        CelRule("!has(self.value) || !has(self.valueFrom)", "set value or valueFrom, not both", ".valueFrom",
                lambda e: e.value is None or e.value_from is None),
    )
    name: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = Field(default=None, max_length=32768)
    value_from: EnvVarSource | None = None


class LocalObjectRef(_Model):
    name: ObjectName
    optional: bool | None = None


class EnvFromSource(_Model):
    cel_rules: ClassVar = (_exactly_one_rule("config_map_ref", "secret_ref"),)
    prefix: str | None = Field(default=None, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    config_map_ref: LocalObjectRef | None = None
    secret_ref: LocalObjectRef | None = None


class ImagePullSecret(_Model):
    name: ObjectName


def _gpus_per_replica(spec: "LLMDeploymentSpec") -> int:
    gpu = spec.resources.gpu
    return 0 if gpu is None else (gpu.count_per_replica or spec.parallelism.tensor)


class LLMDeploymentSpec(_Model):
    cel_rules: ClassVar = (
        CelRule(
            "self.parallelism.tensor == 1 || has(self.resources.gpu)",
            "tensor parallelism needs GPUs: set resources.gpu",
            ".parallelism.tensor",
            lambda s: s.parallelism.tensor == 1 or s.resources.gpu is not None,
        ),
        CelRule(
            "!has(self.resources.gpu) || !has(self.resources.gpu.countPerReplica)"
            " || self.resources.gpu.countPerReplica % self.parallelism.tensor == 0",
            "parallelism.tensor must divide resources.gpu.countPerReplica",
            ".resources.gpu.countPerReplica",
            lambda s: s.resources.gpu is None or _gpus_per_replica(s) % s.parallelism.tensor == 0,
        ),
        label_keys_rule("pod_annotations"),
    )
    model: ModelRef
    engine: EngineSpec = EngineSpec()
    resources: ResourcesSpec = ResourcesSpec()
    parallelism: Parallelism = Parallelism()
    replicas: Replicas = Replicas()
    autoscaling: Autoscaling = Autoscaling()
    capacity: Capacity = Capacity()
    serving: Serving = Serving()
    monitoring: Monitoring = Monitoring()
    router: RouterSpec = RouterSpec()
    env: list[EnvVar] = Field(default=[], max_length=MAX_LIST_ITEMS, description="Extra engine environment (NCCL_*, proxies, ...).")
    env_from: list[EnvFromSource] = Field(default=[], max_length=16, description="ConfigMaps and Secrets whose keys become engine environment.")
    runtime_class_name: ObjectName | None = Field(
        default=None, description="RuntimeClass of engine pods, e.g. `nvidia` where the GPU Operator's container "
                                  "runtime is not the default (k3s, RKE2).")
    image_pull_secrets: list[ImagePullSecret] = Field(default=[], max_length=16)
    service_account_name: ObjectName | None = Field(
        default=None, description="ServiceAccount of engine pods (workload identity); its token is not mounted.")
    priority_class_name: ObjectName | None = None
    pod_annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default={}, max_length=MAX_MAP_ENTRIES, description="Annotations on engine pods (Multus, service mesh, ...).")

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
# Rules on the whole object (the apiserver can't point fieldPath into metadata, so the messages name the field).
NAME_RULES = (
    CelRule(
        f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters so child and pod names fit Kubernetes limits",
        "",
        lambda body: len(body["metadata"]["name"]) <= MAX_NAME_LENGTH,
    ),
    CelRule(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter; no dots): "
        "the Service is named after it",
        "",
        lambda body: re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", body["metadata"]["name"]) is not None,
    ),
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
    for rule in NAME_RULES:
        if not rule.holds(body):
            raise InvalidSpec(rule.message)
    if not isinstance(body.get("spec"), dict):
        raise InvalidSpec("spec: required")
    return parse_spec(body["spec"])


def describe_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(["spec", *(str(part) for part in item["loc"])])
        if item["type"] == "cel_rule":
            path += item["ctx"]["field"]
        lines.append(f"{path}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def _models(root: type[_Model]) -> list[type[_Model]]:
    return [root, *(model for sub in root.__subclasses__() for model in _models(sub))]


def all_cel_rules() -> list[tuple[type[_Model], CelRule]]:
    """Every model with CEL rules, for the CRD generator and the tests that pin both halves of each rule."""
    return [(model, rule) for model in _models(_Model) for rule in model.cel_rules]
