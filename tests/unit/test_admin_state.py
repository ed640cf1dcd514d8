"""runtime.json: only changed sections stored, atomic writes, a broken file set aside."""

from __future__ import annotations

import json

from hostagent.admin.state import RuntimeOverrides, StateStore, from_json, load_runtime_settings, to_json
from hostagent.settings import (
    CaptureOverride,
    CaptureSettings,
    RedactionRule,
    RedactionSettings,
    RuntimeSettings,
    SamplingSettings,
)

BASE = RuntimeSettings(
    probes=frozenset({"http"}),
    sampling=SamplingSettings(ratio=0.5),
    capture=CaptureSettings(bodies=True),
)
FULL = RuntimeOverrides(
    probes=frozenset({"redis", "dns"}),
    sampling=SamplingSettings(0.1, (("checkout", 1.0),), (("dns", 0.0),), True, 250.0),
    redaction=RedactionSettings(False, "hash", (RedactionRule("c", r"cust-(\d+)", "hash"),)),
    capture=CaptureSettings(
        headers=False,
        bodies=True,
        body_max_bytes=4096,
        raw_sql=True,
        overrides=(CaptureOverride(service="shop", bodies=False), CaptureOverride("cart", "http", True, None, 0)),
    ),
)


def test_round_trip_every_field() -> None:
    assert from_json(json.loads(json.dumps(to_json(FULL)))) == FULL
    assert from_json({"format": 1}) == RuntimeOverrides()


def test_apply_replaces_only_stored_sections() -> None:
    ov = RuntimeOverrides(sampling=SamplingSettings(ratio=0.0))
    out = ov.apply(BASE)
    assert out.sampling.ratio == 0.0
    assert out.probes == BASE.probes and out.redaction == BASE.redaction and out.capture == BASE.capture
    assert ov.sections == ("sampling",)
    assert FULL.apply(BASE).probes == frozenset({"redis", "dns"})


def test_save_is_atomic_and_private(tmp_path) -> None:
    store = StateStore(tmp_path)
    store.save(FULL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runtime.json"]
    assert (tmp_path / "runtime.json").stat().st_mode & 0o777 == 0o600
    assert store.load() == FULL
    assert load_runtime_settings(tmp_path, BASE) == FULL.apply(BASE)
    store.save(RuntimeOverrides())  # nothing left to store: the file goes
    assert not (tmp_path / "runtime.json").exists()


def test_broken_file_is_set_aside(tmp_path, caplog) -> None:
    (tmp_path / "runtime.json").write_text('{"format": 1, "sampling": {"rat')
    assert StateStore(tmp_path).load() == RuntimeOverrides()
    assert (tmp_path / "runtime.json.bad").exists() and not (tmp_path / "runtime.json").exists()
    assert "ignoring runtime state" in caplog.text
    (tmp_path / "runtime.json").write_text('{"format": 99}')
    assert StateStore(tmp_path).load() == RuntimeOverrides()


def test_with_section_takes_current_values() -> None:
    current = FULL.apply(BASE)
    ov = RuntimeOverrides().with_section("redaction", current)
    assert ov == RuntimeOverrides(redaction=FULL.redaction)


def test_capture_document_shape() -> None:
    """The stored form (also what audit lines show): unset override fields are left out."""
    assert to_json(RuntimeOverrides(capture=FULL.capture)) == {
        "format": 1,
        "capture": {
            "headers": False,
            "bodies": True,
            "body_max_bytes": 4096,
            "raw_sql": True,
            "overrides": [
                {"service": "shop", "protocol": "*", "bodies": False},
                {"service": "cart", "protocol": "http", "headers": True, "body_max_bytes": 0},
            ],
        },
    }


def test_malformed_capture_is_set_aside(tmp_path) -> None:
    for capture in (
        {"headers": "yes", "bodies": False, "body_max_bytes": 1},
        {"headers": True, "bodies": False, "body_max_bytes": "1k"},
        {"headers": True, "bodies": False, "body_max_bytes": 1, "overrides": [{"bodies": 1}]},
        {"headers": True, "bodies": None, "body_max_bytes": 1},
    ):
        (tmp_path / "runtime.json").write_text(json.dumps({"format": 1, "capture": capture}))
        assert StateStore(tmp_path).load() == RuntimeOverrides()
        assert (tmp_path / "runtime.json.bad").exists()


def test_state_written_before_capture_existed_still_loads(tmp_path) -> None:
    (tmp_path / "runtime.json").write_text(json.dumps({"format": 1, "probes": ["dns"]}))
    ov = StateStore(tmp_path).load()
    assert ov == RuntimeOverrides(probes=frozenset({"dns"})) and ov.apply(BASE).capture == BASE.capture
