"""hostagent.metrics"""
