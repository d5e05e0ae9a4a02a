"""Monitors: rules over the store (spend spikes, latency SLAs, error rates, budgets), evaluated on an interval,
with incidents, notifications, a feed into routing health, and exports as Datadog monitors and Prometheus rules."""
