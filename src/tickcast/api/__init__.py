"""The public prediction API (FastAPI; the Azure Function app wraps it) and its clients.

* :mod:`tickcast.api.app` — the routes, error bodies and OpenAPI document;
* :mod:`tickcast.api.backend` — what the routes do: the latest bars from the lake, the call to the endpoint;
* :mod:`tickcast.api.client` — a client of the public API through the gateway (``tickcast smoke`` / ``predict``).
"""
