"""Local stand-ins for the external services tickcast talks to (Yahoo chart API, AML endpoint, APIM gateway).

Each sub-package is a small FastAPI (or plain Python) program that the local stack starts as a process;
none of them is imported by ``src/tickcast`` at run time. They read their configuration from
:mod:`emulators.settings` (the same ``TICKCAST_*`` variables as the product), never from ``tickcast.settings``.
"""
