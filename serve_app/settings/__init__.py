"""The one typed settings object: defaults < YAML file < environment (SUPPORTGRAPH_*) < explicit overrides.

A YAML file is read from `load_settings(path)` or the SUPPORTGRAPH_CONFIG variable. Nested fields use
`__` in variable names: `SUPPORTGRAPH_DEDUP__HAMMING_THRESHOLD=8`. Unknown keys are errors, not ignored.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from serve_app.experiments.config import Experiments, ExperimentSettings, default_reranker_experiment
from serve_app.settings.base import _Section  # noqa: F401 (the sections' base, for subclasses elsewhere)
from serve_app.settings.handoff import (
    WEEKDAYS,
    HandoffPolicy,
    HandoffSettings,
    HandoffTriggers,
    ServiceHoursSettings,
)
from serve_app.settings.retrieval import (
    COHERE_DEFAULT_MODEL,
    EmbedderSettings,
    KnowledgeSettings,
    RerankerSettings,
)
from serve_app.settings.routing import (
    IntentSettings,
    PricingSettings,
    RoutingPolicySettings,
    RoutingSettings,
    TierSettings,
)
from serve_app.settings.serving import (
    AuthSettings,
    DatabaseSettings,
    DedupSettings,
    DeploymentResources,
    HttpSettings,
    ScreenSettings,
    ServeSettings,
    TenantLimits,
)

__all__ = [
    "COHERE_DEFAULT_MODEL",
    "CONFIG_ENV",
    "WEEKDAYS",
    "AuthSettings",
    "DatabaseSettings",
    "DedupSettings",
    "DeploymentResources",
    "EmbedderSettings",
    "HandoffPolicy",
    "HandoffSettings",
    "HandoffTriggers",
    "HttpSettings",
    "IntentSettings",
    "KnowledgeSettings",
    "PricingSettings",
    "RerankerSettings",
    "RoutingPolicySettings",
    "RoutingSettings",
    "ScreenSettings",
    "ServeSettings",
    "ServiceHoursSettings",
    "Settings",
    "TenantLimits",
    "TierSettings",
    "load_settings",
]

CONFIG_ENV = "SUPPORTGRAPH_CONFIG"

_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("supportgraph_yaml", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUPPORTGRAPH_", env_nested_delimiter="__", extra="forbid")

    state_dir: Path = Field(
        Path(".supportgraph"), description="embedded Postgres data and other local state (made absolute)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="replicas' log level (access logs are always off)"
    )
    dedup: DedupSettings = DedupSettings()
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    serve: ServeSettings = ServeSettings()
    pricing: PricingSettings = PricingSettings()
    db: DatabaseSettings = DatabaseSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    routing: RoutingSettings = RoutingSettings()
    screen: ScreenSettings = ScreenSettings()
    handoff: HandoffSettings = HandoffSettings()
    experiments: list[ExperimentSettings] = Field(
        default_factory=list, description="A/B experiments (serve_app.experiments; live user_config)"
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()  # replicas may run elsewhere than the CLI's folder

    @model_validator(mode="after")
    def _billed_models_priced(self) -> Settings:
        """Every tier, API embedder and Cohere arm has a pricing row, so no billed call goes unpriced."""
        prices = self.pricing.load()
        unpriced = [t.model for t in self.routing.tiers if t.model not in prices.prices]
        if unpriced:
            raise ValueError(f"routing tiers use models missing from the pricing table: {unpriced}")
        billed = [
            r.model or COHERE_DEFAULT_MODEL
            for r in self.knowledge.rerankers.values()
            if r.backend == "cohere"
        ]
        if self.knowledge.embedder.backend == "openai-compatible":
            billed.append(self.knowledge.embedder.model)
        unpriced = sorted({m for m in billed if m not in prices.prices})
        if unpriced:
            raise ValueError(
                f"knowledge backends billed per call use models missing from the pricing table: {unpriced}"
                " (add a row, at 0 for a self-hosted server)"
            )
        return self

    @model_validator(mode="after")
    def _experiments_unique(self) -> Settings:
        self.experiment_set()  # unique names
        return self

    def experiment_set(self) -> Experiments:
        """The experiments, knowing the reranker arms, with `knowledge.ab_weights` as the default one."""
        k = self.knowledge
        return Experiments(
            self.experiments, k.rerankers, default_reranker_experiment(k.ab_weights, k.ab_split_by)
        )

    @model_validator(mode="after")
    def _gpu_needs_cuda(self) -> Settings:
        if self.dedup.device == "cuda" and self.serve.frame_dedup.num_gpus <= 0:
            raise ValueError(
                "dedup.device=cuda needs serve.frame_dedup.num_gpus > 0 (Ray hides GPUs otherwise)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, an optional YAML file (or $SUPPORTGRAPH_CONFIG), env vars, then overrides."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    yaml_file = Path(chosen) if chosen else None
    if yaml_file is not None and not yaml_file.is_file():
        raise FileNotFoundError(f"settings file not found: {yaml_file}")
    token = _yaml_path.set(yaml_file)
    try:
        return Settings(**overrides)
    finally:
        _yaml_path.reset(token)
