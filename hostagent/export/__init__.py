"""hostagent.export"""
