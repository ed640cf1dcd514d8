"""hostagentctl: the command-line client of the hostagent admin API."""
