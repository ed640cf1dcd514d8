"""HTTP/2 bodies through the real daemon: a call a few bytes past the kernel's head copy.

A grpcio server (the demo service, its own process) and a client that writes its frames by hand
on a plain socket, so that each write has an exact size: the HEADERS alone, then the request's
DATA frame as one write of N bytes. With payload_bytes 4096 the kernel copies a call of up to
4096 + 512 bytes whole (head and tail, bpf/events.h); past that it hands on the head and a frame
block. Before, on an HTTP/2 connection the block took the place of the tail also for a call copied
whole: its DATA payload past byte 4096 was lost, and so was the end of the captured body. Also,
the HTTP parsers kept 1024 body bytes whatever [capture] body_max_bytes said.

Each span's body must be the bytes sent (its prefix when the capture could not carry them all),
with ``...body.truncated`` true exactly when it is short.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tests.support.agent import Agent
from tests.support.grpc_demo import demo_pb2
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_grpc_demo

pytestmark = pytest.mark.root

GRPC_PORT = free_port()
HEAD = 4096  # payload_bytes
BODY_MAX = 8192
REQUEST_BODY, RESPONSE_BODY = "hostagent.http.request.body", "hostagent.http.response.body"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING = 0, 1, 4, 6
END_STREAM, END_HEADERS, ACK = 1, 4, 1


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"), receiver.endpoint,
              extra={"probes": {"enabled": ["http2"], "payload_bytes": HEAD},
                     "capture": {"bodies": True, "body_max_bytes": BODY_MAX}}).start()
    yield a
    assert a.stop() == 0


@pytest.fixture(scope="module")
def grpc_server(agent: Agent) -> Iterator[Server]:
    s = start_grpc_demo(GRPC_PORT)
    yield s
    s.stop()


# -- a client that writes its frames itself ---------------------------------------------------------

def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name (RFC 7541 6.2.2), short strings."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def grpc_message(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def request_of_size(write: int) -> bytes:
    """A gRPC request (DATA payload: prefix + EchoRequest) whose DATA frame is ``write`` bytes;
    its text a pattern, so that bytes from the wrong place cannot look right."""
    text_len = write - 9 - 5 - 3  # frame header, message prefix, field tag + 2-byte length
    text = "".join(chr(ord("a") + i % 26) for i in range(text_len))
    body = grpc_message(demo_pb2.EchoRequest(text=text).SerializeToString())
    assert len(body) == write - 9
    return body


class H2Client:
    """HTTP/2 with prior knowledge on a plain socket: every ``send`` is one write."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.send(PREFACE + frame(SETTINGS, 0, 0, b""))
        while self.read_frame()[0] != SETTINGS:
            pass
        self.send(frame(SETTINGS, ACK, 0, b""))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, int, int, bytes]:
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload, self.buf = self.buf[9 : 9 + length], self.buf[9 + length :]
                    if ftype == PING and not flags & ACK:
                        self.send(frame(PING, ACK, 0, payload))
                    return ftype, flags, sid, payload
            got = self.sock.recv(65536)
            assert got, "the server closed the connection"
            self.buf += got

    def unary(self, sid: int, call: str, data_frames: list[bytes]) -> bytes:
        """One Unary call: the HEADERS, then each DATA frame as a write of its own (the last one
        ends the stream). Returns the response's DATA payload."""
        block = b"".join(literal(n, v) for n, v in (
            (":method", "POST"), (":scheme", "http"), (":path", "/hostagent.demo.v1.Demo/Unary"),
            (":authority", f"127.0.0.1:{GRPC_PORT}"), ("content-type", "application/grpc"),
            ("te", "trailers"), ("x-call", call)))
        self.send(frame(HEADERS, END_HEADERS, sid, block))
        for i, payload in enumerate(data_frames):
            time.sleep(0.2)  # the server reads each write apart (an idle grpcio server is at once)
            self.send(frame(DATA, END_STREAM if i == len(data_frames) - 1 else 0, sid, payload))
        response = b""
        while True:
            ftype, flags, got_sid, payload = self.read_frame()
            if got_sid != sid:
                continue
            if ftype == DATA:
                response += payload
            if ftype == HEADERS and flags & END_STREAM:
                return response

    def close(self) -> None:
        self.sock.close()


# -- helpers ----------------------------------------------------------------------------------------

def text_of(body: bytes) -> str:
    return body.decode("utf-8", "replace")  # as hostagent.traces.wire.body_text


def wait_calls(receiver: OtlpGrpcReceiver, names: list[str], timeout: float = 20.0) -> list[ReceivedSpan]:
    def mine(s: ReceivedSpan) -> bool:
        return s.attributes.get("http.request.header.x-call", ("",))[0] in names

    try:
        receiver.recorder.wait_for_spans(lambda spans: sum(1 for s in spans if mine(s)) >= 2 * len(names), timeout)
    except TimeoutError:
        pass
    time.sleep(1.0)
    return [s for s in receiver.recorder.spans if mine(s)]


def body_of(s: ReceivedSpan, key: str) -> tuple[str, bool]:
    return s.attributes.get(key, "<none>"), s.attributes.get(key + ".truncated", "<none>")


def assert_honest(s: ReceivedSpan, key: str, sent: bytes) -> None:
    """The body is what was sent, or its prefix with truncated true; never other bytes."""
    body, truncated = body_of(s, key)
    full = text_of(sent)
    assert isinstance(body, str) and full.startswith(body), (s.kind, key, len(body))
    assert truncated is (body != full), (s.kind, key, len(body), len(full), truncated)


# -- tests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("write", [4097, 4300, 4608, 4609, 5000])
def test_a_call_just_past_the_head_keeps_its_body(receiver: OtlpGrpcReceiver, grpc_server: Server,
                                                  write: int) -> None:
    receiver.recorder.clear()
    body = request_of_size(write)
    call = f"w{write}"
    client = H2Client(GRPC_PORT)
    try:
        response = client.unary(1, call, [body])
    finally:
        client.close()
    text = demo_pb2.EchoRequest.FromString(body[5:]).text
    assert response == grpc_message(demo_pb2.EchoReply(text=text, seq=1).SerializeToString())
    spans = wait_calls(receiver, [call])
    kinds = sorted(s.kind for s in spans)
    assert kinds == ["CLIENT", "SERVER"], [(s.kind, s.name) for s in spans]
    client_span = next(s for s in spans if s.kind == "CLIENT")
    for s in spans:
        assert s.attributes["rpc.response.status_code"] == "OK", s.kind
        assert s.attributes["http.request.body.size"] == len(body), s.kind
        assert_honest(s, REQUEST_BODY, body)
        assert_honest(s, RESPONSE_BODY, response)
    # The client's DATA frame is one write of `write` bytes: whole up to HEAD + 512, else the head
    # (its frame header and HEAD - 9 body bytes) and a frame block.
    want = body if write <= HEAD + 512 else body[: HEAD - 9]
    assert body_of(client_span, REQUEST_BODY) == (text_of(want), write > HEAD + 512)


def test_a_body_cut_by_the_capture_is_not_joined_to_the_next_frame(receiver: OtlpGrpcReceiver,
                                                                   grpc_server: Server) -> None:
    """The request in two DATA frames, the first a 5000-byte write (its end not captured): the body
    is the first frame's captured part; the second frame's bytes, after the gap, are not in it."""
    receiver.recorder.clear()
    body = request_of_size(5100)
    first, second = body[:4991], body[4991:]
    client = H2Client(GRPC_PORT)
    try:
        response = client.unary(1, "split", [first, second])
    finally:
        client.close()
    spans = wait_calls(receiver, ["split"])
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER"], [(s.kind, s.name) for s in spans]
    client_span = next(s for s in spans if s.kind == "CLIENT")
    assert body_of(client_span, REQUEST_BODY) == (text_of(body[: HEAD - 9]), True)
    assert client_span.attributes["http.request.body.size"] == len(body)
    for s in spans:
        assert_honest(s, REQUEST_BODY, body)
        assert_honest(s, RESPONSE_BODY, response)
