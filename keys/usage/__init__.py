"""Usage: the proxy's counters' store (store.py: Redis hashes per minute, or this process's memory
without Redis) and the roll-up into hourly UsageRecord rows (roll_up.py). The reads are
keys.selectors.usage."""
