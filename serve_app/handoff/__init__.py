"""Human handoff: the last rung of the ladder is a person, with the whole context.

One job per module: `triggers` decides whether a turn hands off (asked, abstained, repeated, frustrated),
`hours` knows the team's service hours, `summary` writes the transcript and the brief for the human,
`store` is the `handoffs` table, `rooms` mints the LiveKit tokens of a claim, and `desk` puts them
together for the chat service (`after_turn`) and the HTTP API of the tenant's human agents.
"""
