"""The `relaycast` command: serve, demo, fake-upstream, report, keys, monitors, broadcast."""
