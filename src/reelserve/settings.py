"""The one configuration object.

Precedence (pydantic-settings): explicit arguments, then ``REELSERVE_*`` environment variables,
then a ``.env`` file, then the defaults below. Build one :class:`Settings` in the CLI and pass it
explicitly to ``create_app`` and the worker; there is no module-level singleton.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CsvList = Annotated[list[str], NoDecode]
SecretCsvList = Annotated[list[SecretStr], NoDecode]
"""A comma-separated list of secrets (API keys, key pairs): each item is a :class:`SecretStr`."""

SECRET_SHOWN = "(set)"
"""What :meth:`Settings.redacted` shows in place of a configured secret."""


class Settings(BaseSettings):
    """Every setting of a reelserve install (env prefix ``REELSERVE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="REELSERVE_", env_file=".env", extra="ignore", validate_default=True
    )

    # serving
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("reelserve-data")
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach this server at (for videoURL); default http://host:port",
    )
    api_keys: SecretCsvList = Field(
        default_factory=list,
        description="Accepted API keys; with none, only loopback clients are served",
    )

    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="largest request body read (base64 media)"
    )
    # Hostile clients (docs/security.md, "Threat model"): what a request may carry and who may
    # drive a keyless server.
    max_tasks_per_request: int = Field(
        default=100, ge=1, description="tasks in one POST /v1 array or one WebSocket frame",
    )
    trusted_proxies: CsvList = Field(
        default_factory=list, description="addresses/CIDRs of reverse proxies whose "
        "X-Forwarded-For / X-Real-IP / Forwarded headers are believed (default: none)",
    )
    allowed_hosts: CsvList = Field(
        default_factory=list, description="extra Host names a keyless server answers (besides "
        "loopback names and public_url's host); '*' allows any",
    )
    allowed_origins: CsvList = Field(
        default_factory=list, description="extra browser origins (scheme://host:port) that may "
        "write to a keyless server or open its WebSocket (besides the server's own)",
    )

    # job store and workers
    database_url: SecretStr | None = Field(  # a PostgreSQL URL carries its password
        default=None, description="sqlite:///path or postgresql://...; default SQLite in data_dir"
    )
    workers: int = Field(default=1, ge=0, description="worker slots run beside the server")
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, description="claims of a job that may fail "
                              "(engine or worker error) before the job fails")
    max_worker_losses: int = Field(
        default=10, ge=1, description="times a job's worker may vanish (killed, crashed: its "
        "lease expired) before the job fails with workerLost; a graceful stop hands jobs back "
        "and costs nothing",
    )
    shutdown_grace: float = Field(
        default=10.0, ge=0, description="on SIGTERM, seconds running jobs get to finish before "
        "they are handed back to the queue for another worker",
    )
    prefer_max_wait: float = Field(
        default=30.0, ge=0, description="seconds after which a queued job is claimed in arrival "
        "order even when workers prefer jobs for their loaded models (0: strict arrival order)",
    )
    sync_timeout: float = Field(default=900.0, gt=0, description="how long a sync REST call waits")

    # Runware WebSocket transport (api/runware/ws.py); frames are capped by max_body_bytes
    ws_idle_timeout: float = Field(default=120.0, gt=0, description="close a socket after this many s without a client message")
    ws_resume_seconds: float = Field(default=120.0, gt=0, description="keep undelivered results per connectionSessionUUID")
    ws_max_in_flight: int = Field(default=64, ge=1, description="tasks one connection may have running at once")
    ws_send_queue: int = Field(default=256, ge=1, description="frames queued per socket before a slow client is dropped")
    ws_max_connections: int = Field(default=1000, ge=1, description="open WebSocket connections per process; more are refused at the handshake")

    # engines
    preview_fallback: bool = True
    profiles: Path | None = None
    diffusers_device: str | None = Field(
        default=None, description="torch device for the diffusers engine (cuda, cuda:1, cpu); default auto"
    )
    diffusers_memory_gb: float | None = Field(
        default=None, gt=0, description="memory budget for loaded pipelines; default 90% of the device"
    )
    engine_selector: str | None = Field(
        default=None, description="module:function (Settings) -> (GenerationSpec) -> Engine, "
        "replacing the engine registry (plugins, tests)",
    )
    prores_mov: bool = Field(default=False, description="encode MOV as ProRes 422 HQ instead of H.264")

    # content safety (docs/safety.md): checks run only for requests with safety.checkContent
    safety_model: str | None = Field(
        default=None, description="image classifier for content checks: a local folder "
        "(transformers image-classification model) or a hub repo id that `reelserve models pull "
        "safety` downloads into <data_dir>/models/safety; unset: no checker",
    )
    safety_labels: CsvList = Field(
        default_factory=lambda: ["nsfw"], description="classifier labels that count as unsafe",
    )
    safety_threshold: float = Field(
        default=0.5, ge=0, le=1, description="an image is flagged when an unsafe label scores this or more",
    )
    safety_on_flag: Literal["withhold", "deliver"] = Field(
        default="withhold", description="a flagged output: withhold it and fail the task "
        "(contentPolicyViolation), or deliver it with NSFWContent true",
    )
    safety_batch_size: int = Field(default=16, ge=1, description="frames classified per batch")

    # delivery and outbound
    default_ttl: int = Field(default=86400, ge=60, description="output URL lifetime when no ttl given")
    url_secret: SecretStr | None = Field(default=None, description="key signing output URLs")
    webhook_secret: SecretStr | None = Field(default=None, description="whsec_ secret webhooks are signed with (Standard Webhooks); unset: generated into <data_dir>/webhook_secret")
    outbound_allow: CsvList = Field(default_factory=list)
    kling_keys: SecretCsvList = Field(
        default_factory=list,
        description="Kling API key pairs ACCESS:SECRET (JWT HS256, iss = access key) for /v1/videos/*2video",
    )
    outbound_connect_timeout: float = Field(default=5.0, gt=0, description="outbound connect timeout (s)")
    outbound_read_timeout: float = Field(default=30.0, gt=0, description="outbound per-read timeout (s)")
    outbound_total_timeout: float = Field(default=300.0, gt=0, description="outbound whole-exchange limit (s)")
    outbound_max_redirects: int = Field(default=5, ge=0, description="redirects followed by input fetches")
    # webhook / uploadEndpoint delivery (docs/delivery.md)
    delivery_retry_window: float = Field(default=3600.0, gt=0, description="seconds a delivery is retried")
    delivery_backoff_base: float = Field(default=2.0, gt=0, description="first retry delay (s), doubled each time")
    delivery_backoff_max: float = Field(default=300.0, gt=0, description="longest retry delay (s)")
    delivery_timeout: float = Field(default=15.0, gt=0, description="read timeout of a webhook/upload (s)")
    delivery_concurrency: int = Field(default=4, ge=1, description="deliveries attempted in parallel")
    delivery_poll_interval: float = Field(default=1.0, gt=0, description="outbox poll interval (s)")
    sweep_interval: float = Field(default=60.0, gt=0, description="seconds between expired-artifact sweeps")
    job_retention_days: float = Field(default=30.0, ge=0, description="terminal jobs older than this are purged with their artifacts by the sweeper (0: keep forever)")

    # artifacts: outputs and uploaded media (delivery/storage.py, docs/deployment.md)
    artifacts_url: str | None = Field(
        default=None, description="where outputs and uploads are stored: default "
        "<data_dir>/artifacts; s3://BUCKET/PREFIX for S3-compatible object storage shared by "
        "several machines (needs reelserve[s3])",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph, R2, ...); default AWS S3",
    )
    s3_region: str | None = Field(
        default=None, description="S3 region; default AWS_REGION / AWS_DEFAULT_REGION, else us-east-1",
    )
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key; default the AWS chain (AWS_ACCESS_KEY_ID, "
        "profiles, instance roles)",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret key (with s3_access_key_id)",
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="bucket in the path or the host name; auto: path with "
        "s3_endpoint_url, virtual on AWS",
    )
    artifact_cache_bytes: int = Field(
        default=10 * 1024**3, gt=0, description="local cache of S3 artifacts in "
        "<data_dir>/artifact-cache (least recently used files are evicted beyond this size)",
    )

    # per-key limits (0 = unlimited)
    rate_submits_per_minute: int = Field(default=120, ge=0, description="videoInference submits per key per minute")
    rate_max_in_flight: int = Field(default=32, ge=0, description="queued+running tasks per key")
    rate_uploads_per_minute: int = Field(default=120, ge=0, description="media uploads (input files) per key per minute")
    rate_upload_bytes_per_hour: int = Field(default=5 * 1024**3, ge=0, description="bytes of media uploads per key per hour")

    @field_validator("api_keys", "outbound_allow", "kling_keys", "safety_labels",
                     "trusted_proxies", "allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"artifacts_url {value!r} is not supported; allowed: s3://BUCKET or "
                "s3://BUCKET/PREFIX (unset: files in <data_dir>/artifacts)")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The job store URL (in clear: it is for the store to connect with, never to print),
        defaulting to SQLite inside the data dir."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'reelserve.db'}"

    def redacted(self) -> dict[str, Any]:
        """Every setting by name, each secret (by its type, :class:`SecretStr`, alone or in a
        list) shown as ``(set)`` when configured: what ``reelserve doctor`` and logs may print."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = SECRET_SHOWN if value.get_secret_value() else None
            elif isinstance(value, list) and any(isinstance(item, SecretStr) for item in value):
                value = f"{SECRET_SHOWN} x{len(value)}"
            out[name] = value
        return out

    @property
    def base_url(self) -> str:
        """The URL clients reach this server at."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
