"""The Python WSGI app of the overhead benchmark: Flask, a little work per request (a small
computation and a JSON answer), served by gunicorn with one sync worker."""

from __future__ import annotations

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/work")
def work():  # type: ignore[no-untyped-def]
    total = sum(i * i for i in range(300))
    return jsonify(total=total, items=[{"id": i, "name": f"item-{i}"} for i in range(10)])
