"""The options of ``gridgate dispatch-test``, apart from the test itself: the CLI builds its parser
for every command, and ``gridgate run`` must not load the dispatch test (nor c104) to do so."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gridgate dispatch-test``."""
    parser.add_argument("site")
    parser.add_argument("--group", required=True, help="master group (dispatch centre) to test")
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="the outstation of that group")
    parser.add_argument("--simulator", metavar="URL", default=None,
                        help="simulator control API (gridgate simulate --control), e.g. http://127.0.0.1:8910")
    parser.add_argument("--junit", metavar="FILE", default=None, help="write a JUnit XML report")
    parser.add_argument("--html", metavar="FILE", default=None, help="write a self-contained HTML report")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for connection, answers, events")
    parser.add_argument("--latency-points", type=int, default=20, help="points moved to time spontaneous changes")
    parser.add_argument("--max-latency", type=float, default=3.0, help="seconds a spontaneous change may take")
    parser.add_argument("--time-tolerance", type=float, default=2.0, help="seconds a time tag may be off")
    parser.add_argument("--no-commands", action="store_true",
                        help="send no commands (command IOAs are reported \"not checked\"); by default each command "
                             "IOA gets a safe value (a small step within its limits and ramp) and the old value back")
    parser.add_argument("--tls-cert", metavar="FILE", default=None, help="this master's certificate (104 over TLS)")
    parser.add_argument("--tls-key", metavar="FILE", default=None, help="its private key")
    parser.add_argument("--tls-ca", metavar="FILE", default=None, help="CA the outstation's certificate must chain to")
    parser.add_argument("--tls-server-name", metavar="NAME", default=None,
                        help="name checked against the outstation's certificate (default: the target host)")
