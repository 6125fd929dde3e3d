"""The configuration: a declarative schema over PyYAML nodes, frozen values out.

Every error is collected before any is reported, each as ``FILE:LINE: key: message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router.rules import Rule

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 5
    backoff: tuple[float, ...] = (10.0, 60.0, 300.0, 1800.0)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    probe_interval: float | None = None  # seconds; None: no automatic probes


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: float  # "50/s" -> count=50, per=1.0
    per: float


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    name: str
    url: str
    rules: tuple[Rule, ...] = (Rule(),)
    secrets: tuple[bytes, ...] = field(default=(), repr=False)  # signing keys, newest first
    enabled: bool = True
    timeout: float = 7.0
    retry: RetryConfig = RetryConfig()
    max_in_flight: int = 4
    ordered: bool = False
    rate_limit: RateLimit | None = None
    headers: tuple[tuple[str, str], ...] = ()
    signature: str = "standard"  # standard | hmac-sha256-hex | none
    signature_header: str = "X-Signature"
    allow_private_networks: bool = False
    health: HealthConfig = HealthConfig()
    source: str = ""  # "FILE:LINE" where the webhook is defined


@dataclass(frozen=True, slots=True)
class CurveConfig:
    secret_key_file: str  # absolute path
    authorized_keys_dir: str  # absolute path


@dataclass(frozen=True, slots=True)
class IngestConfig:
    bind: str | None = "tcp://127.0.0.1:5555"
    ack_bind: str | None = "tcp://127.0.0.1:5556"
    max_event_bytes: int = MiB
    curve: CurveConfig | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: str  # absolute path of the main file
    state_dir: str  # absolute
    retention: float = 7 * 86400.0
    shutdown_timeout: float = 10.0
    ingest: IngestConfig = IngestConfig()
    control_bind: str = ""  # zmq address; default ipc://<state_dir>/control.sock
    metrics_bind: tuple[str, int] | None = ("127.0.0.1", 9464)
    delivery_workers: int = 64
    webhooks: tuple[WebhookConfig, ...] = ()
