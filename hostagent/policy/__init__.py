"""hostagent.policy: what the agent keeps (sampling) and what it hides (redaction).

Pure engines built from one ``RuntimeSettings`` snapshot; the pipeline rebuilds (cheaply, cached)
when the settings generation changes.
"""
