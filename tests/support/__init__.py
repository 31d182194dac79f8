"""Helpers shared by the tests: fake services and emulators started on loopback."""
