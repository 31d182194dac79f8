"""The ONE client of the AML online endpoint: scoring and (locally) the stand-in's management API.

* :mod:`tickcast.endpoint.client` — the sync client (deploy, smoke, status) and its async twin (the API);
* :mod:`tickcast.endpoint.http_transport` — aiohttp under httpx for the serving hops.
"""
