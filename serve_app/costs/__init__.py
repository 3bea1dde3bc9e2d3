"""Costs: the pricing table (data in pricing.yaml) and what an attempt costs."""
