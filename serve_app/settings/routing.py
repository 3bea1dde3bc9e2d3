"""Settings of the escalation ladder: tiers, the routing policy, the intent step, pricing."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from serve_app.costs.pricing import PricingTable, default_pricing
from serve_app.settings.base import _Section


class TierSettings(_Section):
    """One rung of the escalation ladder; `model` names a row of the pricing table."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="the tier's name")
    backend: Literal["extractive", "gguf", "gemini", "anthropic", "openai-compatible"] = Field(
        ..., description="offline (extractive, gguf) or a provider SDK"
    )
    model: str = Field(..., description="the model, a row of the pricing table")
    base_url: str | None = Field(None, description="another endpoint speaking the provider's wire format")
    api_key_env: str | None = Field(None, description="variable holding the key (provider default if unset)")
    path: str | None = Field(None, description="gguf: model file (default: bundled SmolLM2-135M)")
    repack_weights: bool = Field(
        False,
        description="gguf: let llama.cpp repack weights into CPU-specific buffers (AMX, Q4_0 layouts); "
        "off because its AMX path segfaults on Intel Xeons with AMX (llama.cpp issue 20824)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="gguf: llama.cpp threads for generation and prompt processing (n_threads, "
        "n_threads_batch); default: the CPUs Ray gave its replica (num_cpus rounded up, at least 1)",
    )
    timeout_s: float = Field(30.0, gt=0, le=600, description="bounds an attempt, retries included")


class RoutingPolicySettings(_Section):
    """Escalation policy; the Router deployment's user_config (changes apply without redeploy)."""

    threshold: float = Field(0.6, ge=0, le=1, description="accept an answer at this confidence or more")
    tier_thresholds: dict[str, float] = Field(default_factory=dict, description="per-tier override")
    tenant_thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="tenant -> tier -> threshold, calibrated online from outcomes (routing/calibration.py); "
        "a tenant or tier not listed uses tier_thresholds / threshold",
    )
    max_attempts: int = Field(3, ge=1, le=10, description="attempts at most (the ladder is cut there)")
    scorer_weights: dict[Literal["self_reported", "grounding", "shape", "calculation", "learned"], float] = (
        Field(
            default_factory=lambda: {"self_reported": 0.5, "grounding": 0.3, "shape": 0.2},
            description="confidence = the weighted mean of these scorers",
        )
    )
    learned_scorer: Path | None = Field(None, description="JSON from eval-router --save-scorer")
    precall_scorer: Path | None = Field(
        None, description="query-only scorer (JSON from eval-router --save-precall) for the pre-call step"
    )
    precall_threshold: float = Field(
        0.0,
        ge=0,
        le=1,
        description="pre-call step: a prompt whose predicted chance that the ladder's first tier answers it "
        "right is below this skips that tier (0: off, the default)",
    )
    verify: bool = Field(
        True,
        description="deliver only answers the verifier finds supported by the passages (or screen text); "
        "when none is, abstain: say so in the tenant's words and hand over (off: the last tier's answer "
        "goes out whatever its confidence)",
    )
    answer_model: Path | None = Field(
        None, description="answer model JSON (supportgraph fit-answers); default: the bundled one"
    )
    wrong_answer_target: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="tolerated share of wrong answers among delivered ones; the verifier's threshold is the "
        "answer model's Learn-then-Test threshold for it (holds with probability 1 - delta)",
    )
    tenant_wrong_answer_targets: dict[str, float] = Field(
        default_factory=dict, description="tenant -> its own wrong_answer_target"
    )
    uncertified_thresholds: bool = Field(
        True,
        description="when the answer model cannot certify a tenant's target (too few calibration examples),"
        " use its empirical threshold (replies say certified: false); off: decline every answer then",
    )
    tenant_answer_models: dict[str, Path] = Field(
        default_factory=dict,
        description="tenant -> an answer model fitted on its own knowledge base (fit-answers --tenant); "
        "the others use answer_model",
    )
    abstain_message: str = Field(
        "I'm not sure about this one, and I'd rather not guess. Let me get a person from our team to help "
        "you with it.",
        min_length=1,
        max_length=1000,
        description="what the customer reads when no answer verified",
    )
    tenant_abstain_messages: dict[str, str] = Field(
        default_factory=dict, description="tenant -> its own abstain_message"
    )
    retries: int = Field(2, ge=0, le=10, description="retries of a failed call before escalating")
    backoff_s: float = Field(0.25, ge=0, le=60, description="first retry delay (doubles, jittered)")
    backoff_max_s: float = Field(4.0, ge=0, le=600, description="longest retry delay (Retry-After too)")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open a tier's breaker")
    breaker_reset_s: float = Field(30.0, gt=0, description="open breaker lets one trial call after this")

    @model_validator(mode="after")
    def _weights(self) -> RoutingPolicySettings:
        if (
            not self.scorer_weights
            or min(self.scorer_weights.values()) < 0
            or not any(self.scorer_weights.values())
        ):
            raise ValueError("routing.policy.scorer_weights needs a positive weight and none negative")
        if self.precall_threshold > 0 and self.precall_scorer is None:
            raise ValueError("routing.policy.precall_threshold needs routing.policy.precall_scorer")
        if self.scorer_weights.get("learned") and self.learned_scorer is None:
            raise ValueError("routing.policy.scorer_weights.learned needs routing.policy.learned_scorer")
        if any(not 0 <= v <= 1 for v in self.tier_thresholds.values()):
            raise ValueError("routing.policy.tier_thresholds are confidences in [0, 1]")
        if any(not 0 <= v <= 1 for tiers in self.tenant_thresholds.values() for v in tiers.values()):
            raise ValueError("routing.policy.tenant_thresholds are confidences in [0, 1]")
        if any(not 0 < v < 1 for v in self.tenant_wrong_answer_targets.values()):
            raise ValueError("routing.policy.tenant_wrong_answer_targets are rates in (0, 1)")
        if any(not m.strip() for m in self.tenant_abstain_messages.values()):
            raise ValueError("routing.policy.tenant_abstain_messages cannot be empty")
        return self

    def abstain_text(self, tenant_id: str | None) -> str:
        return self.tenant_abstain_messages.get(tenant_id or "", self.abstain_message)


def _offline_tiers() -> list[TierSettings]:
    return [
        TierSettings(name="extractive", backend="extractive", model="extractive-grounded", timeout_s=5),
        TierSettings(name="smollm2", backend="gguf", model="smollm2-135m", timeout_s=60),
    ]


class IntentSettings(_Section):
    """The step before retrieval: what a turn is (serve_app/answers/intent.py) and the replies to turns
    that are not help-center questions."""

    enabled: bool = Field(True, description="classify each turn before retrieval")
    model: Path | None = Field(None, description="intent model JSON (fit-intents); default: the bundled one")
    min_confidence: float = Field(
        0.6, ge=0, le=1, description="a turn is anything but a question only at this probability or more"
    )
    chatter_in_scope: float = Field(
        0.25,
        ge=0,
        le=1,
        description="a turn read as chatter is a question when a retrieved passage is this similar to it "
        "(cosine of MiniLM sentence embeddings; 1 turns the check off): short product questions "
        "('is there a dark mode?') read like chatter, and the help center decides",
    )
    greeting: str = Field(
        "Hello! I'm the support assistant. Ask me about the product and I'll answer from the help center, "
        "or ask for a person at any time.",
        min_length=1,
        description="the reply to a greeting",
    )
    thanks: str = Field(
        "You're welcome! Is there anything else I can help with?",
        min_length=1,
        description="the reply to thanks",
    )
    chatter: str = Field(
        "I can only help with questions about the product and its help center. What can I help you with?",
        min_length=1,
        description="the reply that declines out-of-scope chatter",
    )
    human: str = Field(
        "Of course. I'm getting a person from our team for you.",
        min_length=1,
        description="the reply to a request for a person (the handoff adds where it stands)",
    )
    tenant_replies: dict[str, dict[Literal["greeting", "thanks", "chatter", "human"], str]] = Field(
        default_factory=dict, description="tenant -> its own wording of these replies"
    )

    def reply(self, tenant_id: str, label: str) -> str:
        defaults = {
            "greeting": self.greeting,
            "thanks": self.thanks,
            "chatter": self.chatter,
            "human": self.human,
        }
        return self.tenant_replies.get(tenant_id, {}).get(label) or defaults[label]  # type: ignore[index]


class RoutingSettings(_Section):
    """The escalating router: the ladder of tiers, its live policy, retrieval and the intent step."""

    tiers: list[TierSettings] = Field(default_factory=_offline_tiers, description="cheapest first")
    tenant_tiers: dict[str, list[str]] = Field(
        default_factory=dict, description="tenant -> its own ladder (tier names, cheapest first)"
    )
    policy: RoutingPolicySettings = RoutingPolicySettings()
    retrieve: bool = Field(True, description="add help-center passages for the question")
    context_passages: int = Field(4, ge=0, le=20, description="help-center passages in a prompt")
    max_images: int = Field(4, ge=0, le=32, description="frames attached per turn (latest kept)")
    max_tokens: int = Field(512, ge=1, le=8192, description="answer length cap per attempt")
    intents: IntentSettings = IntentSettings()

    @model_validator(mode="after")
    def _ladders(self) -> RoutingSettings:
        names = [t.name for t in self.tiers]
        if not names or len(set(names)) != len(names):
            raise ValueError("routing.tiers needs at least one tier and unique names")
        for tenant, ladder in self.tenant_tiers.items():
            unknown = set(ladder) - set(names)
            if not ladder or unknown:
                raise ValueError(f"routing.tenant_tiers[{tenant!r}] names unknown tiers {sorted(unknown)}")
        unknown = set(self.policy.tier_thresholds) - set(names)
        if unknown:
            raise ValueError(f"routing.policy.tier_thresholds names unknown tiers {sorted(unknown)}")
        unknown = set().union(*self.policy.tenant_thresholds.values()) - set(names)
        if unknown:
            raise ValueError(f"routing.policy.tenant_thresholds names unknown tiers {sorted(unknown)}")
        return self

    def ladder(self, tenant_id: str) -> list[TierSettings]:
        by_name = {t.name: t for t in self.tiers}
        return [by_name[n] for n in self.tenant_tiers.get(tenant_id, [t.name for t in self.tiers])]


class PricingSettings(_Section):
    """The one pricing table (YAML): per model, $ per 1M input and output tokens, per image and per rerank
    search (`per_search`); and `image_usd`, one frame to a vision model (the demo's report)."""

    table: Path | None = Field(None, description="pricing YAML (default: serve_app/costs/pricing.yaml)")

    def load(self) -> PricingTable:
        return PricingTable.load(self.table) if self.table else default_pricing()
