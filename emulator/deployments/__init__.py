"""Inference deployments: CRUD on /v1/accounts/{a}/deployments, hot load, and token-in completions.

Modules: states (pure rules: create body, update mask, wire JSON, hot-load decisions),
store (SQLite rows + materialised weight directories), hot_load (resolving and applying a
snapshot), engine (torch: the weights a deployment serves), sampler (torch: pure sampling),
completions (request parsing and response shaping), routes (HTTP).
"""
