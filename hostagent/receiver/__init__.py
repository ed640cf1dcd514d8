"""The agent's OTLP receiver for local SDKs and the raw forwarder behind it (issue 9)."""
