"""Generated stubs of protos/hostagent/admin/v1/admin.proto (python -m hostagent.admin.gen)."""
