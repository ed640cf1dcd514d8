"""hostagent.probes"""
