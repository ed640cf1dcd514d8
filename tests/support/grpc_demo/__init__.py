"""A demo gRPC service (unary, server/client streaming, bidi, an error) for tests and benchmarks.

``demo_pb2*.py`` are generated from ``demo.proto``; regenerate from the repository root with
``python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=.
tests/support/grpc_demo/demo.proto`` and put back the ``# ruff: noqa`` line atop the .pyi.
"""
