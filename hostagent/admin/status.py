"""What the daemon tells the admin API about itself (the integrator fills ``AgentStatus``).

The admin server adds the settings-derived parts (sampling, redaction, generation) itself from
the SettingsHolder, so a provider only reports what the running pipeline knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol


@dataclass(frozen=True)
class ProbeStatus:
    name: str
    state: str = "unknown"  # "attached" | "detached" | "failed" | "unknown"
    reason: str = ""  # why failed / detached; empty when attached


@dataclass(frozen=True)
class LayeringStatus:
    """SDK layering and trace linking (hostagent.receiver.wiring.Layering), as status shows it."""

    receiver_enabled: bool = False  # the OTLP receiver runs: SDK spans are matched and enriched
    linking_enabled: bool = False  # thread and local client->server linking
    counters: dict[str, int] = field(default_factory=dict)  # Layering.counters(): since start
    held_sdk_spans: int = 0  # gauges: waiting now
    held_agent_spans: int = 0


@dataclass(frozen=True)
class AgentStatus:
    version: str = ""
    uptime_seconds: float = 0.0
    kernel_release: str = ""
    kernel_headers: str = ""  # which headers bcc uses and how they were found
    probes: tuple[ProbeStatus, ...] = ()
    # The enabled probes ``probes`` reflects (the daemon attaches and detaches on its own thread,
    # after the settings changed); None: not known, the states are as good as it gets.
    probes_applied: Optional[frozenset[str]] = None
    events_per_second: float = 0.0
    spans_exported: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # cause -> count
    exporter_endpoint: str = ""
    exporter_last_error: str = ""
    redacted: dict[str, int] = field(default_factory=dict)  # PiiCounters.snapshot()
    healthy: bool = True
    layering: LayeringStatus = field(default_factory=LayeringStatus)
    cpu_effort: str = ""  # the agent's CPU priority / overload backoff, in words
    # ConnectionTracker.stats(): detected_<protocol>, rejected_<protocol>, unknown, upgraded
    connections: dict[str, int] = field(default_factory=dict)


class StatusProvider(Protocol):
    def status(self) -> AgentStatus: ...


class StaticStatus:
    """A provider returning a fixed AgentStatus: for tests and for a daemon still starting."""

    def __init__(self, value: AgentStatus) -> None:
        self.value = value

    def status(self) -> AgentStatus:
        return self.value
