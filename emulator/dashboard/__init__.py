"""A read-only dashboard served by `fwemu serve` at /dashboard (docs/dashboard.md).

Modules: routes (HTTP, log-in), sessions (cookie sessions), queries (store -> view data),
views (HTML, pure), svg_chart (points -> SVG, pure), explain (the inspector's reads and rule).
The per-step metrics it charts are written by the gateway to `store/metrics_log.py`.
"""
