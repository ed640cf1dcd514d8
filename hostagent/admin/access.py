"""Who is calling, and may they change anything.

Unix socket: the kernel lets in only who may open the socket file (mode 0660, group
``hostagent`` when that group exists, else root only); hostagent.admin.uds_proxy tells us the
caller's uid/gid/pid. Reading (status, lists, tail) is open to anyone who got in; changing
requires root or membership in the admin group -- checked again here so that a socket whose mode
an operator loosened still protects changes.

TCP: only with mTLS, so a caller is a client certificate signed by the configured CA; its
subject is the "who". An optional bearer token (``authorization: Bearer <token>`` metadata) is
required on top when configured.
"""

from __future__ import annotations

import grp
import hmac
import pwd
from dataclasses import dataclass
from typing import Any, Optional

from hostagent.admin.uds_proxy import PEER_PREFIX


@dataclass(frozen=True)
class Caller:
    who: str  # for the audit log: "uid=1000(alice) pid=42" or "cert=CN=ops,O=example"
    transport: str  # "unix" | "tcp"
    can_change: bool
    uid: Optional[int] = None


def group_gid(name: str) -> Optional[int]:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "?"


def in_group(uid: int, gid: int, group: str) -> bool:
    """uid 0, or a member of ``group`` (primary gid of the connection or listed member)."""
    if uid == 0:
        return True
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    return gid == entry.gr_gid or _user_name(uid) in entry.gr_mem


def caller_from_context(context: Any, server_id: str, group: str) -> Caller:
    peer: str = context.peer() or ""
    abstract = f"unix-abstract:{PEER_PREFIX}/"
    if peer.startswith(abstract):
        parts = peer[len(abstract) :].split("/")
        if len(parts) == 5 and parts[0] == server_id:
            uid, gid, pid = int(parts[1]), int(parts[2]), int(parts[3])
            who = f"uid={uid}({_user_name(uid)}) pid={pid}"
            return Caller(who, "unix", in_group(uid, gid, group), uid)
    if peer.startswith("unix:"):
        # The private socket: its directory is 0700, so this is root (the agent itself or an
        # operator who went around the public socket).
        return Caller("uid=0(root) private-socket", "unix", True, 0)
    auth = context.auth_context() or {}
    subject = b",".join(auth.get("x509_subject", [])) or b",".join(auth.get("x509_common_name", []))
    if subject:
        return Caller(f"cert={subject.decode(errors='replace')} peer={peer}", "tcp", True)
    return Caller(f"unknown peer={peer}", "tcp", False)


def token_ok(context: Any, token: str) -> bool:
    """The request carries ``authorization: Bearer <token>`` (constant-time comparison)."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, given = value.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
                return True
    return False
