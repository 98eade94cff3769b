"""Settings: every environment variable gentask reads, validated, with defaults.

The old Go server's names (PORT, ENVIRONMENT, MONGO_URL, ARK_API_KEY, VOLCENGINE_ACCESS_KEY,
VOLCENGINE_SECRET_KEY, AI_TIMEOUT, LOG_LEVEL, LOG_KEEP_DAYS) keep their meaning; what is new
to gentask is prefixed GENTASK_ (and LOG_DIR, the old server's log folder). A bad value stops
start-up with a SettingsError naming the variable, the value and what it accepts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

if TYPE_CHECKING:
    from gentask.domain.pricing import PriceTable

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_LABEL_NAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

LINK_KEY_MIN = 32                    # characters of one GENTASK_API_LINK_KEYS entry
LINK_SECONDS_MIN, LINK_SECONDS_MAX = 60, 7 * 86400


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go-style duration ("30s", "2m", "1500ms"), as the old server took."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("expected seconds (e.g. 60) or a duration such as 30s, 2m, 1h, 1500ms")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_QUANTITY = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][-+]?[0-9]+)?$")
_QUANTITY_SCALE = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                   "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}


def parse_quantity(value: str) -> float:
    """The number a Kubernetes resource quantity stands for: "512Mi" -> 536870912.0, "50m" -> 0.05."""
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError("expected a Kubernetes quantity such as 64Mi, 1Gi, 500M or 250m")
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * 10.0 ** int(suffix[1:])
    return number * _QUANTITY_SCALE[suffix]


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


ENV_FILE = ".env"


def _dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (python-dotenv, imported only when the file is there)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _from_environment(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Field values: those given, else the environment's, else the .env file's (names case-insensitive).

    What pydantic-settings did for gentask, without its import (about 0.1 s of CPU, paid by every
    worker pod): each field is read from the variables its validation alias names."""
    env = {k.upper(): v for k, v in _dotenv(Path(ENV_FILE)).items()}
    env.update({k.upper(): v for k, v in (os.environ if environ is None else environ).items()})
    out = dict(values)
    for name, field in Settings.model_fields.items():
        if name in out:
            continue
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [name.upper()]
        for choice in choices:
            if isinstance(choice, str) and choice.upper() in env:
                out[name] = env[choice.upper()]
                break
    return out


class Settings(BaseModel):
    """One place for configuration, read from the environment (and a .env file when present).

    `Settings(**values)`: the values given (by field name), the rest from the environment."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**_from_environment(values))

    # --- the old server's variables -------------------------------------------------------
    port: int = Field(8080, ge=1, le=65535, validation_alias=_env("PORT"),
                      description="HTTP port of the REST API")
    environment: Literal["development", "test", "production"] = Field(
        "development", validation_alias=_env("ENVIRONMENT"))
    mongo_url: str = Field("mongodb://127.0.0.1:27017/gentask", validation_alias=_env("MONGO_URL"),
                           description="MongoDB connection string; the database is the URL's path")
    ark_api_key: SecretStr | None = Field(None, validation_alias=_env("ARK_API_KEY"))
    volcengine_access_key: SecretStr | None = Field(None, validation_alias=_env("VOLCENGINE_ACCESS_KEY"))
    volcengine_secret_key: SecretStr | None = Field(None, validation_alias=_env("VOLCENGINE_SECRET_KEY"))
    ai_timeout: float = Field(120.0, gt=0, le=3600, validation_alias=_env("AI_TIMEOUT"),
                              description="seconds per vendor call")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", validation_alias=_env("LOG_LEVEL"))
    log_keep_days: int = Field(7, ge=1, le=3650, validation_alias=_env("LOG_KEEP_DAYS"))

    # --- gentask's own -----------------------------------------------------------------------
    log_dir: Path | None = Field(None, validation_alias=_env("LOG_DIR"),
                                 description="also write daily-rotated JSON log files here")
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    ark_base_url: str = Field("https://ark.cn-beijing.volces.com/api/v3", validation_alias=_env("ARK_BASE_URL"))
    visual_base_url: str = Field("https://visual.volcengineapi.com",
                                 validation_alias=_env("VOLCENGINE_VISUAL_BASE_URL"))
    openai_base_url: str = Field("https://api.openai.com/v1", validation_alias=_env("OPENAI_BASE_URL"))
    providers: list[str] = Field(default_factory=lambda: ["volcengine", "openai", "fake"],
                                 validation_alias=_env("GENTASK_PROVIDERS"),
                                 description="enabled providers, comma-separated")
    namespace: str = Field("gentask-tasks", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                           validation_alias=_env("GENTASK_NAMESPACE"),
                           description="namespace where the API creates GenerationTasks")
    executor: Literal["job", "inline", "pool"] = Field("job", validation_alias=_env("GENTASK_EXECUTOR"),
                                                     description="job: a Job per task; inline: in the operator; "
                                                                 "pool: a Deployment of workers (gentask worker pool)")
    api_keys: SecretStr | None = Field(None, validation_alias=_env("GENTASK_API_KEYS"),
                                       description="comma-separated key:user[:role][:namespace=NS]; NS: where "
                                                   "the key's tasks live (default GENTASK_NAMESPACE)")
    auth_disabled: bool = Field(False, validation_alias=_env("GENTASK_AUTH_DISABLED"))

    # --- operator and worker ---
    watch_namespaces: list[str] = Field(
        default_factory=list, validation_alias=_env("GENTASK_WATCH_NAMESPACES"),
        description="namespaces the operator watches, comma-separated; empty: all")
    tenant_namespaces: list[str] = Field(
        default_factory=list, validation_alias=_env("GENTASK_TENANT_NAMESPACES"),
        description="watched namespaces (names or globs, comma-separated) served as tenants without a label; "
                    "with GENTASK_TENANT_LABEL unset too, every watched namespace is served (no tenancy checks)")
    tenant_label: str | None = Field(None, validation_alias=_env("GENTASK_TENANT_LABEL"),
                                     description="key=value (or key): a watched namespace carrying this label is "
                                                 "served; tasks of other watched namespaces wait with reason "
                                                 "NamespaceNotEnabled")
    worker_network_policy: str | None = Field(
        None, validation_alias=_env("GENTASK_WORKER_NETWORK_POLICY"),
        description='JSON {"egress": [NetworkPolicy egress rules]}: the operator makes a NetworkPolicy '
                    "with these rules (and no ingress) for the task pods of each namespace it serves, with "
                    "the namespace's worker account; the chart sets it when tenants opt in by label")
    worker_image: str = Field("ghcr.io/gentask/gentask:0.1.0", min_length=1,
                              validation_alias=_env("GENTASK_WORKER_IMAGE"))
    worker_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", validation_alias=_env("GENTASK_WORKER_IMAGE_PULL_POLICY"))
    credentials_secret: str = Field("gentask-credentials", pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
                                    validation_alias=_env("GENTASK_CREDENTIALS_SECRET"),
                                    description="Secret in the task namespace with MONGO_URL and provider keys")
    inline_concurrency: int = Field(4, ge=1, le=256, validation_alias=_env("GENTASK_INLINE_CONCURRENCY"))
    inline_claim_seconds: float = Field(1.0, ge=0, le=3600, validation_alias=_env("GENTASK_INLINE_CLAIM_SECONDS"),
                                        description="inline executor: seconds a run goes before it is marked "
                                                    "Running; a task done sooner gets one write, its outcome "
                                                    "(0: mark it Running at once)")
    pool_concurrency: int = Field(4, ge=1, le=256, validation_alias=_env("GENTASK_POOL_CONCURRENCY"),
                                  description="tasks one `gentask worker pool` process runs at once")
    pool_lease_namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                                             validation_alias=_env("GENTASK_POOL_LEASE_NAMESPACE"),
                                             description="where pool workers keep their Leases (the operator "
                                                         "reads them); empty: GENTASK_NAMESPACE")
    pool_lease_seconds: float = Field(30.0, ge=3, le=3600, validation_alias=_env("GENTASK_POOL_LEASE_SECONDS"),
                                      description="a pool worker whose Lease is this old is dead: its tasks are "
                                                  "queued again (renewed every third of it)")
    pool_drain_seconds: float = Field(20.0, ge=0, le=3600, validation_alias=_env("GENTASK_POOL_DRAIN_SECONDS"),
                                      description="on SIGTERM a pool worker lets its tasks finish this long, "
                                                  "then hands the rest back to the queue")
    metrics_port: int = Field(9090, ge=0, le=65535, validation_alias=_env("GENTASK_METRICS_PORT"),
                              description="operator metrics and probes; 0 turns them off")
    resync_seconds: float = Field(60.0, ge=1, le=86400, validation_alias=_env("GENTASK_RESYNC_SECONDS"),
                                  description="how often the operator re-lists unfinished tasks")
    audit_seconds: float = Field(600.0, ge=1, le=86400, validation_alias=_env("GENTASK_AUDIT_SECONDS"),
                                 description="how often (and once at start) it pages through every task: "
                                             "TTL timers, the mirror, records of tasks deleted behind its back")
    # --- webhooks (spec.notify, callback_url) ---
    webhook_allow: list[str] = Field(default_factory=list, validation_alias=_env("GENTASK_WEBHOOK_ALLOW"),
                                     description="receivers that may be called although their address is "
                                                 "loopback, private or link-local: hosts (as written in the URL) "
                                                 "and CIDRs, comma-separated")
    webhook_allow_http: bool | None = Field(None, validation_alias=_env("GENTASK_WEBHOOK_ALLOW_HTTP"),
                                            description="accept http receivers; empty: everywhere but "
                                                        "ENVIRONMENT=production (allowlisted hosts always)")
    webhook_horizon: float = Field(86400.0, ge=1, le=30 * 86400, validation_alias=_env("GENTASK_WEBHOOK_HORIZON"),
                                   description="an event is retried until it is this old (seconds or 24h, 30m)")
    webhook_retry_base: float = Field(2.0, gt=0, le=3600, validation_alias=_env("GENTASK_WEBHOOK_RETRY_BASE"),
                                      description="the first retry's delay; it doubles each attempt (with jitter)")
    webhook_retry_max: float = Field(3600.0, gt=0, le=86400, validation_alias=_env("GENTASK_WEBHOOK_RETRY_MAX"),
                                     description="the longest delay between two attempts (and the most a "
                                                 "Retry-After is honoured)")
    webhook_signing_key: SecretStr | None = Field(None, validation_alias=_env("GENTASK_WEBHOOK_SIGNING_KEY"),
                                                  description="whsec_<base64>: the key of tasks whose spec.notify "
                                                              "names no secretRef (REST callback_url tasks)")
    webhook_concurrency: int = Field(32, ge=1, le=1024, validation_alias=_env("GENTASK_WEBHOOK_CONCURRENCY"),
                                     description="deliveries the operator sends at once")
    worker_cpu_request: str = Field("50m", validation_alias=_env("GENTASK_WORKER_CPU_REQUEST"))
    worker_memory_request: str = Field("128Mi", validation_alias=_env("GENTASK_WORKER_MEMORY_REQUEST"))
    worker_memory_limit: str = Field("512Mi", validation_alias=_env("GENTASK_WORKER_MEMORY_LIMIT"))
    worker_ephemeral_storage_request: str = Field(
        "64Mi", validation_alias=_env("GENTASK_WORKER_EPHEMERAL_STORAGE_REQUEST"),
        description="node disk the scheduler reserves for a task pod (its /tmp, its logs)")
    worker_ephemeral_storage_limit: str = Field(
        "512Mi", validation_alias=_env("GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT"),
        description="a task pod that writes more node disk than this is evicted")
    worker_tmp_size_limit: str = Field("256Mi", validation_alias=_env("GENTASK_WORKER_TMP_SIZE_LIMIT"),
                                       description="sizeLimit of a task pod's /tmp (emptyDir), at most "
                                                   "GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT")

    # --- api ---
    api_host: str = Field("0.0.0.0", min_length=1, validation_alias=_env("GENTASK_API_HOST"),
                          description="address the REST API listens on (its port is PORT)")
    api_max_body_bytes: int = Field(131072, ge=1024, le=16 * 2**20, validation_alias=_env("GENTASK_API_MAX_BODY_BYTES"),
                                    description="larger request bodies are refused with 413")
    api_rate_per_user: float = Field(20.0, ge=0, le=100000, validation_alias=_env("GENTASK_API_RATE_PER_USER"),
                                     description="REST requests a second per user (token bucket); 0 turns it off")
    api_rate_burst: int = Field(40, ge=1, le=1000000, validation_alias=_env("GENTASK_API_RATE_BURST"),
                                description="requests a user may send at once before the rate applies")
    api_max_unfinished_per_user: int = Field(100, ge=0, le=1000000,
                                             validation_alias=_env("GENTASK_API_MAX_UNFINISHED_PER_USER"),
                                             description="a user's unfinished tasks; creates beyond get 429; 0: no cap")
    api_kube_timeout: float = Field(10.0, gt=0, le=120, validation_alias=_env("GENTASK_API_KUBE_TIMEOUT"),
                                    description="seconds per Kubernetes API call of the REST API")
    mirror_hold_seconds: float = Field(3.0, ge=0, le=60, validation_alias=_env("GENTASK_MIRROR_HOLD_SECONDS"),
                                       description="the operator mirrors a task it sees without a status yet (just "
                                                   "created) after this many seconds, or with its next change if "
                                                   "that comes sooner: one write for both")
    api_mirror_creates: bool = Field(True, validation_alias=_env("GENTASK_API_MIRROR_CREATES"),
                                     description="the API also mirrors each task it creates, so that lists show it "
                                                 "at once (the operator mirrors every change anyway)")
    api_public_url: str | None = Field(None, max_length=2048, validation_alias=_env("GENTASK_API_PUBLIC_URL"),
                                       description="absolute base of the links the API gives out, e.g. "
                                                   "https://gentask.example.com; empty: each request's own base URL")
    api_link_keys: SecretStr | None = Field(None, validation_alias=_env("GENTASK_API_LINK_KEYS"),
                                            description="comma-separated keys that sign artifact links (HMAC-SHA256), "
                                                        "at least 32 characters each: the first signs, every one "
                                                        "verifies; empty: a key made at start, known to this process "
                                                        "only")
    api_link_seconds: int = Field(3600, ge=LINK_SECONDS_MIN, le=LINK_SECONDS_MAX,
                                  validation_alias=_env("GENTASK_API_LINK_SECONDS"),
                                  description="how long a signed artifact link stays valid (rounded up to a minute)")
    api_sse_heartbeat_seconds: float = Field(15.0, gt=0, le=3600, validation_alias=_env("GENTASK_API_SSE_HEARTBEAT"),
                                             description="an idle event stream gets a `: ping` comment this often, "
                                                         "so that proxies keep it open")
    api_sse_max_streams: int = Field(1000, ge=1, le=1000000, validation_alias=_env("GENTASK_API_SSE_MAX_STREAMS"),
                                     description="open event streams on one API process; more get 429")
    api_sse_max_streams_per_user: int = Field(10, ge=1, le=1000000,
                                              validation_alias=_env("GENTASK_API_SSE_MAX_STREAMS_PER_USER"),
                                              description="open event streams of one user on one API process; "
                                                          "more get 429")
    api_sse_max_seconds: float = Field(3600.0, gt=0, le=7 * 86400, validation_alias=_env("GENTASK_API_SSE_MAX_SECONDS"),
                                       description="an event stream ends after this long (the client reconnects "
                                                   "with Last-Event-ID and is authenticated again)")
    api_sse_queue: int = Field(1000, ge=1, le=1000000, validation_alias=_env("GENTASK_API_SSE_QUEUE"),
                               description="tasks whose change a stream may hold unsent; a client further behind "
                                           "is resynced from the index (latest states only)")
    prices: str | None = Field(None, validation_alias=_env("GENTASK_PRICES"),
                               description="price overrides: JSON {\"provider/model\": {\"perImage\": \"0.2\", "
                                           "...}}, or the path of a file holding it (docs/pricing.md)")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip().lower()
            return {"warn": "warning", "fatal": "error", "panic": "error", "trace": "debug"}.get(v, v)
        return v

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip().lower()
            return {"dev": "development", "prod": "production"}.get(v, v)
        return v

    @field_validator("ai_timeout", mode="before")
    @classmethod
    def _timeout(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("mongo_url")
    @classmethod
    def _mongo(cls, v: str) -> str:
        if not v.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("expected a URL starting with mongodb:// or mongodb+srv://")
        return v

    @field_validator("pool_lease_namespace", "api_public_url", "api_link_keys", "tenant_label", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("worker_network_policy", mode="before")
    @classmethod
    def _worker_network_policy(cls, v: object) -> object:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        try:
            doc = json.loads(v) if isinstance(v, str) else v
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc}); expected {{\"egress\": [the rules of a NetworkPolicy's "
                             "spec.egress]}") from None
        if (not isinstance(doc, dict) or set(doc) != {"egress"} or not isinstance(doc["egress"], list)
                or not all(isinstance(rule, dict) for rule in doc["egress"])):
            raise ValueError('expected {"egress": [rules]}, each rule an object as in a NetworkPolicy\'s '
                             "spec.egress (to, ports), and no other key")
        return json.dumps(doc, separators=(",", ":"))

    @property
    def worker_egress(self) -> list[dict[str, Any]] | None:
        """The egress rules of the task pods' NetworkPolicy (GENTASK_WORKER_NETWORK_POLICY); None: no policy."""
        if self.worker_network_policy is None:
            return None
        rules: list[dict[str, Any]] = json.loads(self.worker_network_policy)["egress"]
        return rules

    @field_validator("tenant_label")
    @classmethod
    def _tenant_label(cls, v: str | None) -> str | None:
        if v is None:
            return None
        key, _, value = v.strip().partition("=")
        prefix, _, name = key.rpartition("/")
        if (not _LABEL_NAME.match(name) or (prefix and not _LABEL_PREFIX.match(prefix))
                or (value and not _LABEL_NAME.match(value))):
            raise ValueError("expected a label as key=value or key, e.g. gentask.io/tenant=enabled "
                             "(key: [prefix/]name, name and value up to 63 of [A-Za-z0-9_.-])")
        return f"{key}={value}" if value else key

    @property
    def tenancy(self) -> bool:
        """Namespaces are tenants: GENTASK_TENANT_LABEL or GENTASK_TENANT_NAMESPACES is set, so the
        operator serves only the watched namespaces that opt in, and checks their credentials."""
        return bool(self.tenant_label or self.tenant_namespaces)

    @field_validator("api_public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().rstrip("/")
        scheme, _, rest = v.partition("://")
        if scheme not in ("http", "https") or not rest or any(c in v for c in "?#") or any(c.isspace() for c in v):
            raise ValueError("expected an absolute http:// or https:// URL without query or fragment, "
                             "e.g. https://gentask.example.com or https://example.com/gentask")
        return v

    @field_validator("api_link_keys")
    @classmethod
    def _link_keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        keys = [k.strip() for k in v.get_secret_value().split(",")]
        for position, key in enumerate(keys, start=1):
            if len(key) < LINK_KEY_MIN:    # never the key itself: the message may be logged
                raise ValueError(f"expected comma-separated keys of at least {LINK_KEY_MIN} characters each; "
                                 f"entry {position} has {len(key)} (make one with: openssl rand -hex 32)")
        return SecretStr(",".join(keys))

    @property
    def link_keys(self) -> list[str]:
        """The keys of GENTASK_API_LINK_KEYS, the signing one first; empty when none is set."""
        return self.api_link_keys.get_secret_value().split(",") if self.api_link_keys is not None else []

    @field_validator("worker_cpu_request", "worker_memory_request", "worker_memory_limit",
                     "worker_ephemeral_storage_request", "worker_ephemeral_storage_limit", "worker_tmp_size_limit")
    @classmethod
    def _quantity(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        amount = parse_quantity(v)
        # a limit below its request is refused by the API server at every Job's create: say so at start
        request = {"worker_memory_limit": "worker_memory_request",
                   "worker_ephemeral_storage_limit": "worker_ephemeral_storage_request"}.get(info.field_name or "")
        if request and isinstance(info.data.get(request), str) and amount < parse_quantity(info.data[request]):
            raise ValueError(f"expected at least {_variable(request)} ({info.data[request]})")
        limit = info.data.get("worker_ephemeral_storage_limit")
        if info.field_name == "worker_tmp_size_limit" and isinstance(limit, str) and amount > parse_quantity(limit):
            raise ValueError(f"expected at most GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT ({limit}): the pod "
                             "would be evicted before its /tmp is full")
        return v

    @field_validator("webhook_horizon", "webhook_retry_base", "webhook_retry_max", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("webhook_allow_http", mode="before")
    @classmethod
    def _blank_bool(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("webhook_allow")
    @classmethod
    def _allowlist(cls, v: list[str]) -> list[str]:
        from gentask.domain.webhooks import WebhookPolicy
        WebhookPolicy.parse(v, allow_http=True)         # a bad CIDR stops start-up, named
        return v

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, v: object) -> object:
        """JSON, or a file's path; parsed once here so that a bad price stops start-up with its model and field."""
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        text = str(v).strip()
        if not text.startswith(("{", "[")):
            try:
                text = Path(text).read_text()
            except OSError as exc:
                raise ValueError(f"not JSON and not a readable file ({exc.strerror}); expected {{\"provider/model\": "
                                 "{\"perImage\": \"0.2\"}} or the path of a file holding it") from None
        from gentask.domain.pricing import PriceError, parse_overrides
        try:
            parse_overrides(text)
        except PriceError as exc:
            raise ValueError(str(exc)) from None
        return text

    def price_table(self) -> PriceTable:
        """The catalog's prices with GENTASK_PRICES' overrides."""
        from gentask.domain.pricing import PriceTable
        return PriceTable.from_text(self.prices)

    @field_validator("webhook_signing_key")
    @classmethod
    def _signing_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        from gentask.domain.webhooks import parse_keys
        parse_keys(v.get_secret_value(), "the key")     # its message never holds the key
        return v

    @field_validator("providers", "watch_namespaces", "webhook_allow", "tenant_namespaces", mode="before")
    @classmethod
    def _providers(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @property
    def webhooks_allow_http(self) -> bool:
        """Http receivers are accepted: GENTASK_WEBHOOK_ALLOW_HTTP, else everywhere but production."""
        return self.webhook_allow_http if self.webhook_allow_http is not None else self.environment != "production"

    @property
    def lease_namespace(self) -> str:
        """Where the worker pool's Leases live: GENTASK_POOL_LEASE_NAMESPACE, else GENTASK_NAMESPACE."""
        return self.pool_lease_namespace or self.namespace

    @property
    def mongo_database(self) -> str:
        """The database named in MONGO_URL's path; "gentask" when the URL names none."""
        path = self.mongo_url.split("://", 1)[1].split("/", 1)
        name = path[1].split("?", 1)[0] if len(path) > 1 else ""
        return name or "gentask"

    def secrets(self) -> list[str]:
        """Every secret value that is set: what must never reach a log line."""
        values = [self.ark_api_key, self.volcengine_access_key, self.volcengine_secret_key,
                  self.openai_api_key, self.api_keys, self.webhook_signing_key]
        found = [s.get_secret_value() for s in values if s is not None and s.get_secret_value()]
        if self.webhook_signing_key is not None:     # each key, and its base64 part alone
            for item in self.webhook_signing_key.get_secret_value().split():
                found += [item, item.removeprefix("whsec_")]
        if self.api_keys is not None:
            found += [item.split(":", 1)[0] for item in self.api_keys.get_secret_value().split(",") if item]
        found += self.link_keys
        return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


class SettingsError(ValueError):
    """A setting has a value gentask cannot start with."""


def _variable(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    alias = getattr(field, "validation_alias", None) if field else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field_name.upper()


def _accepts(err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"expected {ctx['expected']}"
    return err.get("msg", "invalid value")


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning a validation error into one message per bad variable.

    `overrides` are raw field values, validated like the environment's (hence Any).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _variable(str(err["loc"][0])) if err["loc"] else "?"
            value = err.get("input")
            shown = "<hidden>" if "KEY" in name else repr(value)
            lines.append(f"invalid setting {name}={shown}: {_accepts(err)}")
        raise SettingsError("; ".join(lines)) from None
