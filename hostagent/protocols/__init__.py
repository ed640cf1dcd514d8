"""hostagent.protocols"""
