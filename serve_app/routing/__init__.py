"""Escalating router: confidence scorers and escalation policy (providers and the deployment follow)."""
