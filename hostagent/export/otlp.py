"""OTLP span and metric exporters (gRPC or HTTP/protobuf), built from explicit settings.

Thin factories over opentelemetry-exporter-otlp. They take every setting explicitly so that the
agent's config file decides; an argument left as None falls back to the exporter's own OTEL_*
environment handling.

Retries are the exporters' own: on UNAVAILABLE and similar they retry with exponential backoff
until ``timeout_s`` is used up, then return FAILURE. ``timeout_s`` therefore bounds how long one
batch can occupy the export worker while the collector is down.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

PROTOCOLS = ("grpc", "http/protobuf")
_SIGNAL_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}


def http_signal_endpoint(endpoint: str, signal: str = "traces") -> str:
    """Append ``/v1/<signal>`` to a base OTLP/HTTP endpoint, as the OTLP spec says.

    An endpoint that already ends with the signal path is used as given (the user named the
    signal URL itself). Any other path is a base, and a prefix of it is kept
    (``https://gw/otlp`` -> ``https://gw/otlp/v1/traces``).
    """
    suffix = _SIGNAL_PATHS[signal]
    parsed = urlparse(endpoint)
    path = parsed.path
    if path.endswith(suffix):
        return endpoint
    return urlunparse(parsed._replace(path=path.rstrip("/") + suffix))


_DEFAULT_PORTS = {"grpc": 4317, "http/protobuf": 4318}


def endpoint_address(endpoint: str, protocol: str) -> Optional[tuple[str, int]]:
    """The (host, port) an OTLP endpoint connects to, or None when it cannot be told."""
    if not endpoint:
        return None
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    if port is None:
        port = 443 if parsed.scheme == "https" and protocol != "grpc" else _DEFAULT_PORTS.get(protocol, 4317)
    return parsed.hostname, port


def refuses_connections(endpoint: str, protocol: str, timeout_s: float = 0.5) -> bool:
    """True only when nothing listens at the collector's address (the connection is refused at
    once): then no retry can deliver within a stop's budget. A slow or unresolvable collector is
    not called down (False): it may still answer."""
    address = endpoint_address(endpoint, protocol)
    if address is None:
        return False
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return False
    except ConnectionRefusedError:
        return True
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def _grpc_options(
    endpoint: str,
    insecure: Optional[bool],
    certificate: Optional[str],
    client_certificate: Optional[str],
    client_key: Optional[str],
    compression: str,
) -> dict[str, Any]:
    import grpc

    scheme = urlparse(endpoint).scheme if "://" in endpoint else ""
    if insecure is None:
        # http:// -> plaintext, https:// -> TLS; no scheme -> TLS only when a CA was given.
        insecure = scheme == "http" or (scheme == "" and not certificate)
    options: dict[str, Any] = {"endpoint": endpoint, "insecure": insecure}
    if not insecure and (certificate or client_certificate):
        options["credentials"] = grpc.ssl_channel_credentials(
            root_certificates=_read(certificate),
            private_key=_read(client_key),
            certificate_chain=_read(client_certificate),
        )
    options["compression"] = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
    return options


def _pinned_ca_session(certificate: str) -> Any:
    """A requests Session that verifies with ``certificate`` whatever the environment says.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's own ``verify``
    (psf/requests#3829), and the OTLP/HTTP exporter sets the configured CA on the Session: on a
    host with those variables set the configured CA was silently ignored and every export
    failed certificate verification. Proxies and other environment settings still apply.
    """
    import requests

    class PinnedCaSession(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            settings["verify"] = self.verify
            return settings

    session = PinnedCaSession()
    session.verify = certificate
    return session


def _check(protocol: str, compression: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"OTLP protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if compression not in ("gzip", "none"):
        raise ValueError(f"OTLP compression must be 'gzip' or 'none', not {compression!r}")


def make_otlp_exporter(
    endpoint: str = "http://localhost:4317",
    protocol: str = "grpc",
    headers: Optional[dict[str, str]] = None,
    timeout_s: float = 10.0,
    compression: str = "none",
    certificate: Optional[str] = None,
    client_certificate: Optional[str] = None,
    client_key: Optional[str] = None,
    insecure: Optional[bool] = None,
    exact_endpoint: bool = False,
    encoded: bool = False,
) -> SpanExporter:
    """An OTLPSpanExporter for ``protocol`` ("grpc" | "http/protobuf").

    ``exact_endpoint``: the URL came from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, which the OTLP spec
    says is used as-is over HTTP (no ``/v1/traces`` appended). ``encoded`` (gRPC only): ``export``
    is given requests already encoded (hostagent.export.child).
    """
    _check(protocol, compression)
    if protocol == "grpc":
        from hostagent.export.otlp_grpc import grpc_span_exporter

        # The SDK's gRPC exporter (channel, TLS, retries) with our own encoder: see otlp_fast.
        options = _grpc_options(endpoint, insecure, certificate, client_certificate, client_key, compression)
        return grpc_span_exporter(encoded=encoded, headers=dict(headers or {}), timeout=timeout_s,  # type: ignore[no-any-return]
                                  **options)

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(
        endpoint=endpoint if exact_endpoint else http_signal_endpoint(endpoint, "traces"),
        certificate_file=certificate,
        client_certificate_file=client_certificate,
        client_key_file=client_key,
        headers=dict(headers or {}),
        timeout=timeout_s,
        compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
        session=_pinned_ca_session(certificate) if certificate else None,
    )


def make_otlp_metric_exporter(
    endpoint: str = "http://localhost:4317",
    protocol: str = "grpc",
    headers: Optional[dict[str, str]] = None,
    timeout_s: float = 10.0,
    compression: str = "none",
    certificate: Optional[str] = None,
    client_certificate: Optional[str] = None,
    client_key: Optional[str] = None,
    insecure: Optional[bool] = None,
) -> MetricExporter:
    """An OTLPMetricExporter with the same settings as the span exporter."""
    _check(protocol, compression)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        options = _grpc_options(endpoint, insecure, certificate, client_certificate, client_key, compression)
        return GrpcMetrics(headers=dict(headers or {}), timeout=timeout_s, **options)

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

    return HttpMetrics(
        endpoint=http_signal_endpoint(endpoint, "metrics"),
        certificate_file=certificate,
        client_certificate_file=client_certificate,
        client_key_file=client_key,
        headers=dict(headers or {}),
        timeout=timeout_s,
        compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
        session=_pinned_ca_session(certificate) if certificate else None,
    )
