"""hostagent.admin"""
