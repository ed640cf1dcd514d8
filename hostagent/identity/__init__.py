"""hostagent.identity"""
