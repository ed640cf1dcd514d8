"""hostagent.traces"""
