"""Local stand-in for Azure API Management: a reverse proxy enforcing ``cloud/apim/policy.xml``.

No free offline APIM exists (the self-hosted gateway needs a live Azure instance), so this package reads
the very policy document the cloud overlay deploys (:mod:`emulators.apim.policy`) and enforces it in front
of the Function app (:mod:`emulators.apim.app`). Run it with ``python -m emulators.apim``.
"""
