"""A tenant's account: costs, API keys, LiveKit tokens, A/B experiment reports."""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from serve_app.settings import load_settings
from serve_app.tenancy import validate_tenant_id


def _cmd_costs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from serve_app.costs.ledger import cost_report
    from serve_app.db.database import Database

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)

    async def report() -> object:
        async with Database.of(settings) as db:
            return await cost_report(db, args.tenant, args.since, args.until)

    result = asyncio.run(report())
    table = Table(title=f"Costs of tenant {args.tenant}")
    for col in ("service", "provider", "attempts", "input tokens", "output tokens", "images", "chars", "USD"):
        table.add_column(col, justify="left" if col in ("service", "provider") else "right")
    for row in result.rows:
        table.add_row(
            str(row["service"]),
            str(row["provider"]),
            str(row["attempts"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            str(row["images"]),
            str(row["characters"]),
            f"{row['cost_usd']:.4f}",
        )
    console = Console(width=120)
    console.print(table)
    if result.tiers:
        tiers = Table(title="LLM attempts by tier")
        for col in ("tier", "model", "attempts", "accepted", "failed", "USD"):
            tiers.add_column(col, justify="left" if col in ("tier", "model") else "right")
        for row in result.tiers:
            tiers.add_row(
                *(str(row[k]) for k in ("tier", "model", "attempts", "accepted", "failed")),
                f"{row['cost_usd']:.4f}",
            )
        console.print(tiers)
        saved = result.saved_pct
        console.print(
            f"{result.requests} routed requests: ${result.llm_usd:.4f} vs ${result.baseline_usd:.4f}"
            " on the top tier alone" + (f" ({saved:.1f}% saved)" if saved is not None else "")
        )
    print(json.dumps({"costs": args.tenant, **result.to_dict()}, default=str))
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from serve_app.auth import create_key, list_keys, revoke_key
    from serve_app.db.database import Database

    settings = load_settings(args.config)
    validate_tenant_id(args.tenant)
    if args.action == "revoke" and not args.prefix:
        raise ValueError("revoke needs --prefix (see `supportgraph keys list`)")

    async def act() -> object:
        async with Database.of(settings) as db:
            if args.action == "create":
                return await create_key(db, args.tenant, args.name, args.role)
            if args.action == "revoke":
                return await revoke_key(db, args.tenant, args.prefix)
            return await list_keys(db, args.tenant)

    result = asyncio.run(act())
    if args.action == "create":
        print(result)  # the only time the key is shown
    elif args.action == "revoke":
        if not result:
            raise ValueError(f"no live key with prefix {args.prefix!r} for tenant {args.tenant!r}")
        print(f"revoked {result} key(s)")
    else:
        print(json.dumps(result, default=str))
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from serve_app.agent.tokens import mint_token

    key, secret = os.environ.get("LIVEKIT_API_KEY"), os.environ.get("LIVEKIT_API_SECRET")
    if not key or not secret:
        raise ValueError("set LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    print(mint_token(key, secret, args.tenant, args.room, args.identity, args.ttl))
    return 0


def _cmd_ab_report(args: argparse.Namespace) -> int:
    from serve_app.db.database import Database
    from serve_app.experiments.backend import DbExperiments
    from serve_app.experiments.report import format_report

    settings = load_settings(args.config)
    if args.tenant:
        validate_tenant_id(args.tenant)

    async def report() -> dict[str, object] | None:
        async with Database.of(settings) as db:
            experiments = DbExperiments(db, settings.experiment_set())
            return await experiments.experiment_report(args.tenant, args.name)

    result = asyncio.run(report())
    if result is None:
        raise ValueError(f"no experiment {args.name!r} in the settings or the data")
    print(format_report(result))
    return 0
