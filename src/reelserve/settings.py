"""The one configuration object.

Precedence (pydantic-settings): explicit arguments, then ``REELSERVE_*`` environment variables,
then a ``.env`` file, then the defaults below. Build one :class:`Settings` in the CLI and pass it
explicitly to ``create_app`` and the worker; there is no module-level singleton.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CsvList = Annotated[list[str], NoDecode]


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
    api_keys: CsvList = Field(
        default_factory=list,
        description="Accepted API keys; with none, only loopback clients are served",
    )

    # job store and workers
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://...; default SQLite in data_dir"
    )
    workers: int = Field(default=1, ge=0, description="worker slots run beside the server")
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    sync_timeout: float = Field(default=900.0, gt=0, description="how long a sync REST call waits")

    # engines
    preview_fallback: bool = True
    profiles: Path | None = None
    prores_mov: bool = Field(default=False, description="encode MOV as ProRes 422 HQ instead of H.264")

    # delivery and outbound
    default_ttl: int = Field(default=86400, ge=60, description="output URL lifetime when no ttl given")
    url_secret: str | None = Field(default=None, description="key signing output URLs")
    webhook_secret: str | None = Field(default=None, description="HMAC key for webhook signatures")
    outbound_allow: CsvList = Field(default_factory=list)

    @field_validator("api_keys", "outbound_allow", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        """The job store URL, defaulting to SQLite inside the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'reelserve.db'}"

    @property
    def base_url(self) -> str:
        """The URL clients reach this server at."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
