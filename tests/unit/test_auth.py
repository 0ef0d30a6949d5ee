"""The pure parts of access control: identities, tokens and the permission table."""

from __future__ import annotations

import os
import pwd
import socket

import pytest

from daemon.api.auth import (
    ANONYMOUS,
    AuthSettings,
    Identity,
    Op,
    TokenEntry,
    identify,
    may,
    peer_uid,
    token_sha256,
    token_user,
    user_for_uid,
)
from daemon.spec import ACL

SETTINGS = AuthSettings(
    enabled=True,
    tokens=[
        TokenEntry(user="alice", sha256=token_sha256("a-token")),
        TokenEntry(user="bob", sha256=token_sha256("b-token").upper()),  # hex case is ignored
        TokenEntry(user="mallory", sha256="not hex ünïcode"),  # a bad entry matches nothing
    ],
    roles={
        "alice": ["deployers"],
        "bob": ["starters"],
        "dave": ["sre"],
        "erin": ["owners"],
        "frank": ["ops-words"],
    },
    admin_roles=["sre"],
)
ACLS = [
    ACL(role="deployers", ops=["start", "stop"]),
    ACL(role="starters", ops=["start"]),
    ACL(role="owners", admin=True),
    ACL(role="ops-words", ops=["admin"]),
]


@pytest.mark.parametrize(
    ("user", "op", "acl", "allowed"),
    [
        ("alice", Op.START, ACLS, True),
        ("alice", Op.STOP, ACLS, True),
        ("bob", Op.START, ACLS, True),
        ("bob", Op.STOP, ACLS, False),
        ("carol", Op.START, ACLS, False),
        ("carol", Op.STOP, ACLS, False),
        ("carol", Op.READ, ACLS, True),
        ("erin", Op.STOP, ACLS, True),  # admin: true
        ("frank", Op.STOP, ACLS, False),  # ops: [admin]: not an op, grants nothing
        ("frank", Op.START, ACLS, False),
        ("dave", Op.STOP, ACLS, True),  # config admin role
        ("dave", Op.START, None, True),  # config admins even on unknown types
        ("carol", Op.START, [], True),  # no ACL: open to authenticated users
        ("carol", Op.STOP, [], True),
        ("carol", Op.STOP, None, False),  # type unknown (gone from the specs): admins only
        ("carol", Op.READ, None, True),
        ("alice", Op.START, [ACL(role="deployers")], False),  # a role with no ops
    ],
)
def test_may(user: str, op: Op, acl: list[ACL] | None, allowed: bool) -> None:
    assert may(SETTINGS, user, op, acl) is allowed


@pytest.mark.parametrize("op", list(Op))
def test_without_auth_everything_is_allowed(op: Op) -> None:
    assert may(AuthSettings(), "anyone", op, [ACL(role="nobody", ops=["start"])])
    assert may(AuthSettings(), "anyone", op, None)


@pytest.mark.parametrize(
    ("header", "user"),
    [
        ("Bearer a-token", "alice"),
        ("bearer a-token", "alice"),
        ("  Bearer   a-token  ", "alice"),
        ("Bearer b-token", "bob"),
        ("Bearer a-tokenX", None),
        ("Bearer ", None),
        ("Basic a-token", None),
        ("a-token", None),
        ("", None),
        (None, None),
        ("Bearer ünïcode-☃", None),
        ("Bearer not hex ünïcode", None),
    ],
)
def test_token_user(header: str | None, user: str | None) -> None:
    assert token_user(SETTINGS, header) == user


@pytest.mark.parametrize(
    ("settings", "is_unix", "uid", "header", "expected"),
    [
        (SETTINGS, False, None, "Bearer a-token", Identity("alice", "token")),
        (SETTINGS, False, None, "Bearer nope", None),
        (SETTINGS, False, None, None, None),
        (SETTINGS, True, os.getuid(), None, Identity(pwd.getpwuid(os.getuid()).pw_name, "socket")),
        (SETTINGS, True, None, None, Identity("local", "socket")),
        (AuthSettings(), False, None, None, Identity(ANONYMOUS, "anonymous")),
        (AuthSettings(), False, None, "Bearer a-token", Identity(ANONYMOUS, "anonymous")),
        (AuthSettings(), True, 2**31 - 2, None, Identity(f"uid:{2**31 - 2}", "socket")),
    ],
)
def test_identify(
    settings: AuthSettings,
    is_unix: bool,
    uid: int | None,
    header: str | None,
    expected: Identity | None,
) -> None:
    assert identify(settings, is_unix=is_unix, uid=uid, authorization=header) == expected


def test_user_for_uid() -> None:
    assert user_for_uid(os.getuid()) == pwd.getpwuid(os.getuid()).pw_name
    assert user_for_uid(2**31 - 2) == f"uid:{2**31 - 2}"


def test_peer_uid_of_a_real_unix_socket_pair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert peer_uid(a) == os.getuid()
        assert peer_uid(tcp) is None
        assert peer_uid(None) is None
    finally:
        for s in (a, b, tcp):
            s.close()
