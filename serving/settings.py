"""Typed service settings, read from `CUREFLOW_*` environment variables when `load_settings()` is called.

Nothing is read at import. Keys are `SecretStr` and the database URL (which may carry a password) is left out
of `repr`, so printing or logging the settings never shows a secret.

    CUREFLOW_API_KEYS="k1@crm-a,k2"  scoring keys (several at once, for rotation), each of a tenant (`@tenant`;
                                   none: the tenant `default`)
    CUREFLOW_AUDITOR_KEYS="u1"     keys that read every decision (each read logged) and score nothing
    CUREFLOW_ADMIN_KEYS="a1"       keys for /v1/admin/*
    CUREFLOW_MODEL_URI, CUREFLOW_DATABASE_URL, CUREFLOW_DECISION_LOG_SYNC, CUREFLOW_DECISION_LOG_TIMEOUT_S,
    CUREFLOW_MAX_CONCURRENCY,
    CUREFLOW_MAX_BODY_BYTES, CUREFLOW_BODY_TIMEOUT_S, CUREFLOW_RELOAD_INTERVAL_S, CUREFLOW_INSECURE, CUREFLOW_LOG_LEVEL
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KeyList = Annotated[list[SecretStr], NoDecode, Field(default_factory=list, repr=False)]


class Settings(BaseSettings):
    """Everything the scoring service is configured with (env prefix `CUREFLOW_`)."""

    model_config = SettingsConfigDict(env_prefix="CUREFLOW_", extra="forbid", frozen=True)

    api_keys: KeyList
    admin_keys: KeyList
    auditor_keys: KeyList
    model_uri: str = "models:/cureflow@champion"
    database_url: str = Field(default="sqlite:///decisions.db", repr=False)
    decision_log_sync: Literal["full", "normal"] = Field(
        default="full", description="full: each decision on disk before its answer; normal: survives a crash "
                                    "of the process or database server, may lose the last ones on a power loss")
    decision_log_timeout_s: float = Field(
        default=5.0, gt=0, description="statement and lock timeout of the decision log; a call to a database "
                                       "that hangs fails (503) one second after it")
    max_concurrency: int = Field(default=32, ge=1, description="requests in flight before the service sheds load")
    max_body_bytes: int = Field(default=2_000_000, ge=1)
    body_timeout_s: float = Field(default=10.0, gt=0, description="a request body not received in this time "
                                                                 "is answered 408")
    reload_interval_s: float = Field(default=0.0, ge=0, description="0 = no periodic check of the model alias")
    insecure: bool = False
    log_level: str = "INFO"

    @field_validator("api_keys", "admin_keys", "auditor_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> list[Any]:
        """Accept `"k1, k2"` (as in the environment) or a list; blanks are dropped."""
        if value is None:
            return []
        items = value.split(",") if isinstance(value, str) else list(value)
        plain = [item.get_secret_value() if isinstance(item, SecretStr) else str(item) for item in items]
        return [key.strip() for key in plain if key.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: Any) -> str:
        """Upper-case the level and refuse names the logging module does not know."""
        level = str(value).strip().upper()
        if not isinstance(logging.getLevelName(level), int):
            raise ValueError(f"unknown log level {value!r}")
        return level

    def api_key_values(self) -> list[str]:
        """The plain scoring keys, for building a `KeyRing` (do not keep or log them)."""
        return [key.get_secret_value() for key in self.api_keys]

    def admin_key_values(self) -> list[str]:
        """The plain admin keys, for building a `KeyRing` (do not keep or log them)."""
        return [key.get_secret_value() for key in self.admin_keys]

    def auditor_key_values(self) -> list[str]:
        """The plain auditor keys, for building a `KeyRing` (do not keep or log them)."""
        return [key.get_secret_value() for key in self.auditor_keys]


def load_settings(**overrides: Any) -> Settings:
    """Read the environment now; keyword overrides (e.g. from CLI flags) win over it."""
    return Settings(**overrides)
