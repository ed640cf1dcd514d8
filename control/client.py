"""How hostagentctl reaches the agent: a Unix socket by default, or TCP with mTLS.

Connection errors become one sentence that says which address was tried and what to check.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import grpc

from hostagent.admin.v1 import admin_pb2_grpc
from hostagent.config import address_ok

DEFAULT_SOCKET = "/run/hostagent/admin.sock"


class CliError(Exception):
    """An error to print (one line, no traceback) before exiting with status 1."""


@dataclass(frozen=True)
class Target:
    socket: str = DEFAULT_SOCKET
    address: str = ""  # host:port -> TCP with TLS
    cacert: str = ""
    cert: str = ""
    key: str = ""
    token: str = ""
    server_name: str = ""  # TLS name override (certificate's name when dialling an IP)

    @property
    def display(self) -> str:
        return f"tcp {self.address} (TLS)" if self.address else f"unix:{self.socket}"


def _read_pem(path: str, what: str) -> bytes:
    """A PEM file's bytes. gRPC takes anything and fails later in its own log lines, followed by
    "Connection refused" or a TLS error that names neither the option nor the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise CliError(f"{what} {path!r} is not a PEM file (no -----BEGIN line)")
    return data


def open_channel(target: Target) -> grpc.Channel:
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    if not target.address:
        return grpc.insecure_channel(f"unix:{target.socket}", options=options)
    if not address_ok(target.address):  # gRPC would try 127.0.0.1:99999 as port 34463
        raise CliError(f"--address {target.address!r}: expected HOST:PORT, the port from 1 to 65535 "
                       "(such as agent.example.com:7443)")  # fmt: skip
    if not target.cacert:
        raise CliError("--address needs --cacert (the CA that signed the agent's certificate)")
    if bool(target.cert) != bool(target.key):
        raise CliError("--cert and --key go together")
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read_pem(target.cacert, "--cacert"),
        private_key=_read_pem(target.key, "--key") if target.key else None,
        certificate_chain=_read_pem(target.cert, "--cert") if target.cert else None,
    )
    if target.server_name:
        options.append(("grpc.ssl_target_name_override", target.server_name))
    return grpc.secure_channel(target.address, creds, options=options)


def metadata(target: Target) -> Optional[list[tuple[str, str]]]:
    return [("authorization", f"Bearer {target.token}")] if target.token else None


def stub(channel: grpc.Channel) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(channel)


def explain(error: grpc.RpcError, target: Target) -> str:
    """One helpful sentence for a failed call."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if not target.address:
            sock = target.socket
            if not os.path.exists(sock):
                why = f"{sock} does not exist"
            elif not stat.S_ISSOCK(os.stat(sock).st_mode):
                why = f"{sock} is not a Unix socket"
            elif not os.access(sock, os.R_OK | os.W_OK):
                return (
                    f"permission denied on {sock}: only root and members of the 'hostagent' group may "
                    "use the admin API (try sudo, or add yourself to that group)"
                )
            else:
                why = "nobody answered"
            return (
                f"cannot reach the hostagent admin API at unix:{sock} ({why}). Is the agent running? "
                "Check with `systemctl status hostagent`, or pass --socket PATH / set HOSTAGENT_SOCKET."
            )
        return (
            f"cannot reach the hostagent admin API at {target.address} over TLS ({details.strip()}). "
            "Check the address, the certificates (--cacert/--cert/--key) and `systemctl status hostagent` "
            "on that host."
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the agent at {target.display} did not answer in time (try --timeout)"
    name = code.name if code is not None else "ERROR"
    return f"{name.lower().replace('_', ' ')}: {details}"
