"""The stack's PostgreSQL runs as an unprivileged system user when tickcast runs as root; two stacks starting at
once on a fresh machine (the parallel test workers) both try to create it."""

from __future__ import annotations

import os
import pwd
import shutil

import pytest

from tickcast_dev.stack import postgres


def test_a_user_another_stack_created_meanwhile_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    existing = pwd.getpwuid(0)
    asked: list[str] = []

    def getpwnam(name: str) -> pwd.struct_passwd:
        asked.append(name)
        if len(asked) == 1:  # missing when first looked up; created by the other stack before ours finished
            raise KeyError(name)
        return existing

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(shutil, "which", lambda _: "/bin/false")  # our useradd: "user already exists"
    assert postgres._ids() == (existing.pw_uid, existing.pw_gid)
    assert asked == [postgres.SYSTEM_USER, postgres.SYSTEM_USER]


def test_a_user_that_cannot_be_created_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def getpwnam(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(shutil, "which", lambda _: "/bin/false")
    with pytest.raises(postgres.PostgresSetupError, match=r"cannot create the system user .*useradd exited 1"):
        postgres._ids()
