"""hostagent.kernel"""
