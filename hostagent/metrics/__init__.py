"""hostagent.metrics: RED duration histograms from Calls (``red``), the agent's own counters
(``self_metrics``) and the MeterProvider that exports both over OTLP (``provider``)."""
