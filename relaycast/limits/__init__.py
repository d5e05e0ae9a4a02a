"""Rate limits and budgets: requests and tokens per minute, spend per day and month, per key (and per user or
feature). In memory for one process; atomically in Redis (one Lua script per request) when replicas share it."""
