"""Entry point of hostagentctl (placeholder until the admin API lands)."""

import sys


def main() -> int:
    print("hostagentctl: the admin API is not built yet (see issue 5)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
