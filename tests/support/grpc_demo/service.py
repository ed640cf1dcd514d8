"""The Demo service: a grpcio server and a client helper that drive every call shape.

The server answers in-process on 127.0.0.1 (loopback only). ``Fail`` answers with the status code
the request names, so one method covers both server-side error rules (UNAVAILABLE is an error on
both sides; NOT_FOUND only on the client side); it returns the binary metadata ``echo-bin`` the
client sent as ``grpc-status-details-bin`` (what grpcio-status sends for rich errors). ``Unary``
waits ``count`` ms before answering (0: at once), for deadlines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

from tests.support.grpc_demo import demo_pb2, demo_pb2_grpc

METHOD_PREFIX = "/hostagent.demo.v1.Demo/"


class DemoServicer(demo_pb2_grpc.DemoServicer):
    def Unary(self, request: demo_pb2.EchoRequest, context: grpc.ServicerContext) -> demo_pb2.EchoReply:
        if request.count > 0:
            time.sleep(request.count / 1000)
        return demo_pb2.EchoReply(text=request.text, seq=1)

    def ServerStream(
        self, request: demo_pb2.EchoRequest, context: grpc.ServicerContext
    ) -> Iterator[demo_pb2.EchoReply]:
        for i in range(request.count):
            yield demo_pb2.EchoReply(text=request.text, seq=i + 1)

    def ClientStream(
        self, request_iterator: Iterator[demo_pb2.EchoRequest], context: grpc.ServicerContext
    ) -> demo_pb2.EchoReply:
        texts = [r.text for r in request_iterator]
        return demo_pb2.EchoReply(text="+".join(texts), seq=len(texts))

    def Bidi(
        self, request_iterator: Iterator[demo_pb2.EchoRequest], context: grpc.ServicerContext
    ) -> Iterator[demo_pb2.EchoReply]:
        for i, r in enumerate(request_iterator):
            yield demo_pb2.EchoReply(text=r.text, seq=i + 1)

    def Fail(self, request: demo_pb2.EchoRequest, context: grpc.ServicerContext) -> demo_pb2.EchoReply:
        code = grpc.StatusCode(_code_by_value(request.fail_code))
        details = [v for k, v in context.invocation_metadata() if k == "echo-bin"]
        if details:
            context.set_trailing_metadata((("grpc-status-details-bin", details[0]),))
        context.abort(code, f"failing on purpose: {request.text}")
        raise AssertionError("abort returns by raising")


def _code_by_value(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value  # type: ignore[no-any-return]
    raise ValueError(f"no grpc status code {value}")


def start_server(port: int, workers: int = 8) -> grpc.Server:
    """Start the Demo server on 127.0.0.1:port (0 picks a free port; read it from the return)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    demo_pb2_grpc.add_DemoServicer_to_server(DemoServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind 127.0.0.1:{port}")
    server.start()
    return server


def stub_for(port: int, options: tuple[tuple[str, int], ...] = ()) -> tuple[grpc.Channel, demo_pb2_grpc.DemoStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    return channel, demo_pb2_grpc.DemoStub(channel)


def run_every_shape(stub: demo_pb2_grpc.DemoStub) -> None:
    """One call of each shape, in a fixed order: Unary, ServerStream(3), ClientStream(3),
    Bidi(2), Fail(UNAVAILABLE), Fail(NOT_FOUND)."""
    stub.Unary(demo_pb2.EchoRequest(text="hello"))
    list(stub.ServerStream(demo_pb2.EchoRequest(text="s", count=3)))
    stub.ClientStream(iter([demo_pb2.EchoRequest(text=t) for t in ("a", "b", "c")]))
    list(stub.Bidi(iter([demo_pb2.EchoRequest(text=t) for t in ("x", "y")])))
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
        try:
            stub.Fail(demo_pb2.EchoRequest(text="boom", fail_code=code.value[0]))
        except grpc.RpcError:
            pass
        else:
            raise AssertionError("Fail must fail")


def run_cancelled_bidi(stub: demo_pb2_grpc.DemoStub) -> None:
    """A Bidi call the client cancels after the first reply: the client sends RST_STREAM(CANCEL)."""
    release = threading.Event()

    def requests() -> Iterator[demo_pb2.EchoRequest]:
        yield demo_pb2.EchoRequest(text="first")
        release.wait(5)  # keep the request stream open until the call is cancelled

    call = stub.Bidi(requests())
    next(call)
    call.cancel()
    release.set()


def run_concurrent_unary(stub: demo_pb2_grpc.DemoStub, n: int = 20) -> None:
    """``n`` unary calls in flight at once on one channel (one HTTP/2 connection)."""
    calls = [stub.Unary.future(demo_pb2.EchoRequest(text=f"c{i}")) for i in range(n)]
    for call in calls:
        call.result(timeout=10)


def run_deadline_exceeded(stub: demo_pb2_grpc.DemoStub) -> None:
    """A unary call whose 100 ms deadline passes while the server waits 500 ms: the client
    library resets the stream (RST_STREAM CANCEL) and its application sees DEADLINE_EXCEEDED."""
    try:
        stub.Unary(demo_pb2.EchoRequest(text="late", count=500), timeout=0.1)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code()
    else:
        raise AssertionError("the deadline must pass")
    time.sleep(0.6)  # the server's answer, if it sends one, is part of the recording


BINARY_METADATA = b"\xff\xfe\x80\x00abc"  # not UTF-8, a NUL inside: only base64 carries it


def run_binary_metadata(stub: demo_pb2_grpc.DemoStub) -> None:
    """A Fail(NOT_FOUND) call carrying binary metadata (``echo-bin``) that the server returns as
    ``grpc-status-details-bin`` in its trailers."""
    try:
        stub.Fail(demo_pb2.EchoRequest(text="rich", fail_code=grpc.StatusCode.NOT_FOUND.value[0]),
                  metadata=(("echo-bin", BINARY_METADATA),))
    except grpc.RpcError as e:
        got = dict(e.trailing_metadata())  # type: ignore[attr-defined]
        assert got["grpc-status-details-bin"] == BINARY_METADATA, got
    else:
        raise AssertionError("Fail must fail")


def run_big_then_small(stub: demo_pb2_grpc.DemoStub, size: int = 20_000) -> None:
    """A Unary call of ``size`` bytes each way (grpcio writes each message in one sendmsg: one
    DATA frame, the reply with its HEADERS before and its trailers after), then a small one."""
    stub.Unary(demo_pb2.EchoRequest(text="R" * size))
    stub.Unary(demo_pb2.EchoRequest(text="small"))
