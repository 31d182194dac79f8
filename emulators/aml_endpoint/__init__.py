"""AML online endpoint stand-in: blue/green deployments of score.py, a traffic split, endpoint keys.

See ``README.md`` here, :mod:`emulators.aml_endpoint.app` (routes) and :mod:`emulators.aml_endpoint.deployments`
(deployments, state, routing). Start it with ``python -m emulators.aml_endpoint``.
"""
