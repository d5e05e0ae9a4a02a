"""Gateway keys: the config's and virtual keys issued through the admin API (stored as hashes only), with the
models each may use, default attribution, and limits (requests and tokens per minute, spend per day / month)."""
