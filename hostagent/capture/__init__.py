"""hostagent.capture"""
