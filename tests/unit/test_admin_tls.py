"""The remote listener: TCP with mutual TLS (certificates made with openssl here), bearer token."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from hostagent.admin.server import TlsFiles
from hostagent.admin.v1 import admin_pb2 as pb
from hostagent.admin.v1 import admin_pb2_grpc

from .admin_harness import cli, running, world_dir

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
PORT = 18711
EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # fast to make


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=d,
    )


def _leaf(d: Path, name: str, ca: str, cn: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        f"/O=hostagent-test/CN={cn}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=d,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue")
    _leaf(d, "server", "ca", "hostagent", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "ca", "ops-alice", "extendedKeyUsage=clientAuth\n")
    _leaf(d, "mallory", "rogue", "mallory", "extendedKeyUsage=clientAuth\n")
    return d


@pytest.fixture
def base_dir():
    with world_dir() as d:
        yield d


def _stub(pki: Path, client: str | None) -> admin_pb2_grpc.AdminServiceStub:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{client}.key").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None,
    )
    return admin_pb2_grpc.AdminServiceStub(grpc.secure_channel(f"127.0.0.1:{PORT}", creds))


def _tls(pki: Path) -> TlsFiles:
    return TlsFiles(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))


def test_mtls_client_certificate_required(pki: Path, base_dir: Path) -> None:
    with running(base_dir, listen=f"127.0.0.1:{PORT}", tls=_tls(pki)) as h:
        assert h.server.tcp_port == PORT
        for client in (None, "mallory"):  # no certificate; a certificate from another CA
            with pytest.raises(grpc.RpcError) as exc:
                _stub(pki, client).GetStatus(pb.GetStatusRequest(), timeout=5)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        api = _stub(pki, "client")
        assert api.GetStatus(pb.GetStatusRequest(), timeout=5).version == "9.9.9-test"
        api.SetProbeEnabled(pb.SetProbeEnabledRequest(name="mysql", enabled=True), timeout=5)
        assert "mysql" in h.holder.current.probes
        (line,) = h.audit()
        assert line["who"].startswith("cert=CN=ops-alice,O=hostagent-test peer=ipv4:127.0.0.1:")


def test_token_on_top_of_mtls(pki: Path, base_dir: Path) -> None:
    with running(base_dir, listen=f"127.0.0.1:{PORT}", tls=_tls(pki), token="s3cret-token") as h:
        api = _stub(pki, "client")
        with pytest.raises(grpc.RpcError) as exc:
            api.GetStatus(pb.GetStatusRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as exc:
            api.GetStatus(pb.GetStatusRequest(), timeout=5, metadata=[("authorization", "Bearer wrong")])
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = api.GetStatus(pb.GetStatusRequest(), timeout=5, metadata=[("authorization", "Bearer s3cret-token")])
        assert ok.version == "9.9.9-test"
        # the local socket does not need the token: the kernel vouches for the uid there
        assert h.stub().GetStatus(pb.GetStatusRequest(), timeout=5).version == "9.9.9-test"


def test_cli_over_mtls(pki: Path, base_dir: Path) -> None:
    with running(base_dir, listen=f"127.0.0.1:{PORT}", tls=_tls(pki), token="tok") as h:
        common = ["--address", f"127.0.0.1:{PORT}", "--cacert", str(pki / "ca.pem")]
        good = [*common, "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")]
        out = cli(*good, "sampling", "set", "0.5", "-o", "json", env={"HOSTAGENT_TOKEN": "tok"})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["ratio"] == 0.5 and h.holder.current.sampling.ratio == 0.5
        out = cli(*common, "status")
        assert out.returncode == 1
        assert f"cannot reach the hostagent admin API at 127.0.0.1:{PORT} over TLS" in out.stderr
        out = cli(*good, "status")  # no token
        assert out.returncode == 1
        assert out.stderr.strip() == "hostagentctl: unauthenticated: a valid bearer token is required"
