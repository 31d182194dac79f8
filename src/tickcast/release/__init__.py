"""Release: blue/green deploy of a registered version to the online endpoint, smoke, rollback.

A new version goes to the idle colour at 0 % traffic, answers a smoke request, takes all traffic; only then
does the ``production`` alias move. Any failure leaves the old colour serving and the alias unmoved.
Targets: the local endpoint stand-in and Azure ML (``azure-ai-ml``).
"""
