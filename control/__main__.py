"""hostagentctl: change what the running hostagent captures, samples and hides.

    hostagentctl [connection options] VERB [args] [-o table|json]

Connection options go before the verb (``--socket PATH``, or ``--address HOST:PORT`` with
``--cacert/--cert/--key`` and optionally ``--token``); environment: HOSTAGENT_SOCKET,
HOSTAGENT_ADDRESS, HOSTAGENT_TOKEN. Exit status: 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

import grpc
from hostagentctl import output
from hostagentctl.client import DEFAULT_SOCKET, CliError, Target, explain, metadata, open_channel, stub
from hostagentctl.parse import byte_size, count, duration_ms, on_off, ratio, seconds

from hostagent import __version__
from hostagent.admin.v1 import admin_pb2 as pb
from hostagent.policy.sampling import KNOWN_PROTOCOLS, protocol_name

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 30.0  # re-attaching the socket programs takes seconds on a loaded host


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hostagentctl",
        description="Control a running hostagent: probes, sampling, redaction, capture, live spans.",
        epilog="Connection options go before the verb; -o goes after it.",
    )
    conn = p.add_argument_group("connection")
    conn.add_argument(
        "--socket",
        default=os.environ.get("HOSTAGENT_SOCKET", DEFAULT_SOCKET),
        help=f"admin Unix socket (env HOSTAGENT_SOCKET; default {DEFAULT_SOCKET})",
    )
    conn.add_argument(
        "--address",
        default=os.environ.get("HOSTAGENT_ADDRESS", ""),
        help="HOST:PORT of a remote agent's TLS listener (env HOSTAGENT_ADDRESS)",
    )
    conn.add_argument("--cacert", default="", help="CA certificate that signed the agent's certificate")
    conn.add_argument("--cert", default="", help="client certificate (mTLS)")
    conn.add_argument("--key", default="", help="client private key (mTLS)")
    conn.add_argument(
        "--token",
        default=os.environ.get("HOSTAGENT_TOKEN", ""),
        help="bearer token, when the agent requires one (env HOSTAGENT_TOKEN)",
    )
    conn.add_argument("--tls-server-name", default="", help="name expected in the agent's certificate")
    conn.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g}; {PROBE_TIMEOUT_S:g} for probes "
        "enable/disable, which answer once the probe is attached or detached)",
    )

    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")

    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("status", parents=[fmt], help="what the agent is doing")
    verbs.add_parser("version", parents=[fmt], help="client and agent versions")
    verbs.add_parser("reload", parents=[fmt], help="re-read the config file (like SIGHUP)")
    verbs.add_parser("reset", parents=[fmt], help="drop runtime changes: back to the config file")

    probes = verbs.add_parser("probes", help="list, enable, disable probes").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    probes.add_parser("list", parents=[fmt], help="each probe: enabled, attached, and why not")
    for action, what in (("enable", "turn a probe on (attaches its programs)"),
                         ("disable", "turn a probe off (its spans stop, its programs detach)")):  # fmt: skip
        sp = probes.add_parser(action, parents=[fmt], help=what, description=f"{what[0].upper()}{what[1:]}; "
                               "answers once the agent has done it, with the state after.")  # fmt: skip
        sp.add_argument("name", metavar="NAME", help="the probe's name, as probes list shows it")

    sampling = verbs.add_parser("sampling", help="get or set sampling").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    sampling.add_parser("get", parents=[fmt], help="the sampling in force")
    sset = sampling.add_parser("set", parents=[fmt], help="set the global ratio or an override")
    sset.add_argument("ratio", metavar="RATIO", type=ratio, nargs="?", help="0..1")
    which = sset.add_mutually_exclusive_group()
    which.add_argument("--service", default="", help="set the override for this service.name")
    which.add_argument("--protocol", default="", type=protocol_name, help="set the override for this protocol")
    keep = sset.add_mutually_exclusive_group()
    keep.add_argument("--keep-errors", dest="keep_errors", action="store_true", default=None,
                      help="always keep calls that failed, whatever the ratio")
    keep.add_argument("--no-keep-errors", dest="keep_errors", action="store_false",
                      help="failed calls are sampled like the others")
    sset.add_argument(
        "--keep-slower-than",
        type=duration_ms,
        default=None,
        metavar="DURATION",
        help="always keep calls at least this slow, e.g. 500ms (0 turns it off)",
    )
    sclear = sampling.add_parser("clear", parents=[fmt], help="remove a per-service or per-protocol override")
    cw = sclear.add_mutually_exclusive_group(required=True)
    cw.add_argument("--service", default="", help="remove the override for this service.name")
    cw.add_argument("--protocol", default="", type=protocol_name, help="remove the override for this protocol")

    red = verbs.add_parser("redaction", help="redaction rules and PII detection").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    red.add_parser("list", parents=[fmt], help="the rules and the PII detection in force")
    radd = red.add_parser("add", parents=[fmt], help="add a rule: what a pattern matches is hidden in every span")
    radd.add_argument("--name", required=True, help="the rule's name (shown in what it hides)")
    radd.add_argument("--pattern", required=True, help="Python regular expression")
    radd.add_argument("--mode", choices=("redact", "hash"), default="redact",
                      help="redact: [REDACTED:NAME]; hash: [HASHED:NAME:keyed hash], equal values stay "
                      "equal (default redact)")
    rrem = red.add_parser("remove", parents=[fmt], help="remove a rule by its name")
    rrem.add_argument("name", metavar="NAME", nargs="?", help="the rule's name (or --name, as add takes it)")
    rrem.add_argument("--name", dest="name_option", default=None, metavar="NAME", help="the rule's name")
    rtest = red.add_parser("test", parents=[fmt], help="show what the agent would hide in TEXT")
    rtest.add_argument("text", metavar="TEXT", help="any text, e.g. a URL or a header value")
    rpii = red.add_parser("pii", parents=[fmt], help="turn the built-in PII detectors on or off")
    rpii.add_argument("state", choices=("on", "off"), help="the detectors on or off")
    rpii.add_argument("--mode", choices=("redact", "hash"), default="",
                      help="what the detectors put in place of what they find (default: unchanged)")

    cap = verbs.add_parser("capture", help="which wire detail spans carry (headers, bodies, raw SQL)")
    capture = cap.add_subparsers(dest="action", metavar="ACTION", required=True)
    capture.add_parser("get", parents=[fmt], help="the capture settings in force")
    cset = capture.add_parser(
        "set",
        parents=[fmt],
        help="change the base values, or with --service/--protocol the override for them",
        description="Overrides apply in order, later ones win; the one just set moves last.",
    )
    cset.add_argument("--headers", type=on_off, default=None, metavar="on|off", help="captured headers")
    cset.add_argument("--bodies", type=on_off, default=None, metavar="on|off", help="captured bodies")
    cset.add_argument("--body-max", type=byte_size, default=None, metavar="BYTES", help="body prefix kept, e.g. 4k")
    cset.add_argument("--raw-sql", type=on_off, default=None, metavar="on|off", help="raw SQL and parameters (global)")
    cset.add_argument("--service", default="", help="the override for this service.name")
    cset.add_argument("--protocol", default="", type=protocol_name, help="the override for this protocol")
    cclear = capture.add_parser("clear", parents=[fmt], help="remove the override for a service and/or protocol")
    cclear.add_argument("--service", default="", help="the override for this service.name")
    cclear.add_argument("--protocol", default="", type=protocol_name, help="the override for this protocol")

    tail = verbs.add_parser("tail", parents=[fmt], help="live spans (Ctrl-C to stop)")
    tail.add_argument("--service", default="", help="only this service.name's spans")
    # checked here too: a filter nothing can match would print nothing, silently
    tail.add_argument("--protocol", default="", type=protocol_name, choices=KNOWN_PROTOCOLS,
                      help="only this protocol's spans")
    tail.add_argument("--status", choices=("ok", "error"), default="", help="only spans with this status")
    tail.add_argument("--min-duration", type=duration_ms, default=0.0, metavar="DURATION",
                      help="only calls at least this slow, e.g. 100ms")
    tail.add_argument("--count", type=count, default=0, help="stop after N spans")
    _remember_parsers(p)
    return p


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each command's parser becomes its namespace's ``command``, so that an error found after
    parsing (extra arguments, a missing choice) shows that command's usage, not hostagentctl's."""
    parser.set_defaults(command=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _remember_parsers(sub)


def _connection_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for group in parser._action_groups if group.title == "connection"
            for a in group._group_actions for o in a.option_strings}  # fmt: skip


def _parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse; arguments left over are refused by the command they were given to. argparse's own
    refusal printed hostagentctl's usage, which does not show the command's arguments, and a
    connection option after the verb (``status --socket PATH``) was just "unrecognized"."""
    ns, extra = parser.parse_known_args(argv)  # exits 2 on other usage errors
    if extra:
        message = f"unrecognized arguments: {' '.join(extra)}"
        misplaced = sorted({a.split("=", 1)[0] for a in extra} & _connection_options(parser))
        if misplaced:
            message += (f" ({', '.join(misplaced)} is a connection option: it goes before the verb, as in "
                        f"hostagentctl {misplaced[0]} ... {ns.command.prog.split(' ', 1)[-1]})")  # fmt: skip
        ns.command.error(message)
    return ns


class Ctl:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.target = Target(
            socket=ns.socket,
            address=ns.address,
            cacert=ns.cacert,
            cert=ns.cert,
            key=ns.key,
            token=ns.token,
            server_name=ns.tls_server_name,
        )
        self.json = getattr(ns, "output", "table") == "json"
        self._channel: Optional[grpc.Channel] = None

    @property
    def api(self) -> Any:
        if self._channel is None:
            self._channel = open_channel(self.target)
        return stub(self._channel)

    def call(self, method: str, request: Any, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        if self.ns.timeout is not None:
            timeout = self.ns.timeout
        return getattr(self.api, method)(request, timeout=timeout, metadata=metadata(self.target))

    def show(self, msg: Any, text: Callable[[Any], str]) -> None:
        print(output.dump_json(msg) if self.json else text(msg))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    # verbs ---------------------------------------------------------------------------------
    def status(self) -> int:
        self.show(self.call("GetStatus", pb.GetStatusRequest()), output.status_text)
        return EXIT_OK

    def version(self) -> int:
        agent: Optional[str] = None
        error = ""
        try:
            agent = self.call("GetStatus", pb.GetStatusRequest()).version
        except grpc.RpcError as exc:
            error = explain(exc, self.target)
        if self.json:
            print(output.dump_json({"client": __version__, "agent": agent, "agent_error": error}))
        else:
            print(f"hostagentctl {__version__}")
            print(f"hostagent    {agent}" if agent is not None else f"hostagent    unknown: {error}")
        return EXIT_OK

    def reload(self) -> int:
        resp = self.call("Reload", pb.ReloadRequest())
        self.show(resp, lambda r: "reloaded" if r.ok else f"reload failed, running config kept: {r.error}")
        return EXIT_OK if resp.ok else EXIT_ERROR

    def reset(self) -> int:
        resp = self.call("Reset", pb.ResetRequest())
        self.show(resp, lambda r: f"reset: {', '.join(r.reset)}" if r.reset else "reset: nothing was changed")
        return EXIT_OK

    def probes(self) -> int:
        ns = self.ns
        if ns.action == "list":
            resp = self.call("ListProbes", pb.ListProbesRequest())
        else:
            req = pb.SetProbeEnabledRequest(name=ns.name, enabled=ns.action == "enable")
            resp = self.call("SetProbeEnabled", req, timeout=PROBE_TIMEOUT_S)  # the answer waits for the attach
        self.show(resp, lambda r: output.probes_table(r.probes))
        return EXIT_OK

    def sampling(self) -> int:
        ns = self.ns
        if ns.action == "get":
            resp = self.call("GetSampling", pb.GetSamplingRequest())
        elif ns.action == "clear":
            resp = self.call(
                "SetSampling",
                pb.SetSamplingRequest(service=ns.service, protocol=ns.protocol, clear_override=True),
            )
        else:
            req = pb.SetSamplingRequest(service=ns.service, protocol=ns.protocol)
            if ns.ratio is not None:
                req.ratio = ns.ratio
            if ns.keep_errors is not None:
                req.keep_errors = ns.keep_errors
            if ns.keep_slower_than is not None:
                req.keep_slower_than_ms = ns.keep_slower_than
            if ns.ratio is None and ns.keep_errors is None and ns.keep_slower_than is None:
                raise UsageError("give RATIO, --keep-errors/--no-keep-errors or --keep-slower-than")
            resp = self.call("SetSampling", req)
        self.show(resp, output.sampling_text)
        return EXIT_OK

    def redaction(self) -> int:
        ns = self.ns
        if ns.action == "test":
            resp = self.call("TestRedaction", pb.TestRedactionRequest(text=ns.text))
            self.show(resp, lambda r: r.text)
            return EXIT_OK
        if ns.action == "list":
            resp = self.call("ListRedactionRules", pb.ListRedactionRulesRequest())
        elif ns.action == "add":
            rule = pb.RedactionRule(name=ns.name, pattern=ns.pattern, mode=ns.mode)
            resp = self.call("AddRedactionRule", pb.AddRedactionRuleRequest(rule=rule))
        elif ns.action == "remove":
            resp = self.call("RemoveRedactionRule", pb.RemoveRedactionRuleRequest(name=_rule_name(ns)))
        else:
            resp = self.call("SetPiiDetection", pb.SetPiiDetectionRequest(enabled=ns.state == "on", mode=ns.mode))
        self.show(resp, output.redaction_text)
        return EXIT_OK

    def capture(self) -> int:
        ns = self.ns
        if ns.action == "get":
            resp = self.call("GetCapture", pb.GetCaptureRequest())
        elif ns.action == "clear":
            if not (ns.service or ns.protocol):
                raise UsageError("give --service and/or --protocol")
            req = pb.SetCaptureRequest(service=ns.service, protocol=ns.protocol, clear_override=True)
            resp = self.call("SetCapture", req)
        else:
            req = pb.SetCaptureRequest(service=ns.service, protocol=ns.protocol)
            values = {"headers": ns.headers, "bodies": ns.bodies, "body_max_bytes": ns.body_max, "raw_sql": ns.raw_sql}
            if all(v is None for v in values.values()):
                raise UsageError("give --headers, --bodies, --body-max or --raw-sql")
            for name, value in values.items():
                if value is not None:
                    setattr(req, name, value)
            resp = self.call("SetCapture", req)
        self.show(resp, output.capture_text)
        return EXIT_OK

    def tail(self) -> int:
        ns = self.ns
        req = pb.TailSpansRequest(
            service=ns.service, protocol=ns.protocol, status=ns.status, min_duration_ms=ns.min_duration
        )
        stream = self.api.TailSpans(req, metadata=metadata(self.target))
        seen = 0
        try:
            for span in stream:
                print(output.dump_json(span, compact=True) if self.json else output.span_line(span), flush=True)
                seen += 1
                if ns.count and seen >= ns.count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            stream.cancel()
        return EXIT_OK


class UsageError(Exception):
    pass


def _rule_name(ns: argparse.Namespace) -> str:
    """``redaction remove NAME`` or ``--name NAME`` (as ``add`` names a rule); one of them."""
    given = [n for n in (ns.name, ns.name_option) if n is not None]
    if len(given) != 1:
        raise UsageError("give the rule's name once, as NAME or --name NAME")
    return str(given[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ns = _parse(build_parser(), argv)
    ctl = Ctl(ns)
    try:
        return int(getattr(ctl, ns.verb)())
    except UsageError as exc:
        ns.command.print_usage(sys.stderr)
        print(f"{ns.command.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"hostagentctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except grpc.RpcError as exc:
        print(f"hostagentctl: {explain(exc, ctl.target)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `hostagentctl tail | head`
        return EXIT_OK
    finally:
        ctl.close()


if __name__ == "__main__":
    sys.exit(main())
