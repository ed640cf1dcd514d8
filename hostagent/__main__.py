"""``hostagent``: run the agent, validate a config file, print the version."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from hostagent import __version__
from hostagent.config import ConfigError, load_config

DEFAULT_CONFIG = "/etc/hostagent/hostagent.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hostagent",
        description="eBPF host agent: every network call of every process as OpenTelemetry spans.",
        epilog="Runs in the foreground (systemd runs it the same way). Needs root for BPF.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent in the foreground")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    check = sub.add_parser("check-config", help="validate a config file; exit 0 when valid, 1 when not")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    sub.add_parser("version", help="print the version")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"hostagent {__version__}")
        return 0
    if args.command == "check-config":
        try:
            load_config(args.path)
        except ConfigError as exc:
            print(f"hostagent: {exc}", file=sys.stderr)
            return 1
        print(f"{args.path}: OK")
        return 0
    if args.command == "run":
        from hostagent.memory import limit_malloc_arenas

        # Before any thread exists: each would get a glibc malloc arena of its own (up to 8 per
        # core), each keeping its freed memory; two are plenty for one busy poll thread.
        limit_malloc_arenas(2)
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"hostagent: {exc}", file=sys.stderr)
            return 1
        from hostagent.logsetup import configure

        configure(config.agent.log_level)
        from hostagent.daemon import run_agent

        return run_agent(config)
    _parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
