"""The dashboard's static files (`static/`), served by relaycast.server.dashboard. Charts: Chart.js, bundled."""
