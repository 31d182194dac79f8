"""Azure Functions entry point (Python v2 programming model): the public prediction API, unchanged.

``func.AsgiFunctionApp`` registers ONE HTTP trigger (``http_app_func``, route ``/{*route}``, every method)
that hands each request to the FastAPI app of :func:`tickcast.api.app.create_app` and runs its lifespan
(the pooled endpoint client) on the first request. ``host.json`` sets ``routePrefix`` to ``""`` and the
FastAPI routes keep their ``/api`` prefix, so the Azure URL of a route is the local one:
``https://<app>.azurewebsites.net/api/predictions/SPY`` ~ ``http://127.0.0.1:8771/api/predictions/SPY``.

Auth level ANONYMOUS: API Management in front checks the subscription key and rate limits
(``cloud/apim/policy.xml``); lock the Function down to APIM with access restrictions / a private endpoint.
Configuration comes from the app settings (``TICKCAST_PROFILE=cloud``, ``TICKCAST_SERVING__ENDPOINT_URL``,
``TICKCAST_STORAGE__ACCOUNT_URL``, ``TICKCAST_SYMBOLS``, ...): see README.md.
"""

from __future__ import annotations

import azure.functions as func

from tickcast.api.app import create_app

app = func.AsgiFunctionApp(app=create_app(), http_auth_level=func.AuthLevel.ANONYMOUS)
