"""Entry point of the ``gridgate`` command.

The asyncio reactor must be installed before anything imports ``twisted.internet.reactor``, so
this module installs it first and only then imports the CLI.
"""

import os
import sys


def main() -> None:
    """Install the asyncio reactor, then run the command line."""
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from gateway.cli import main as cli_main

    try:
        code = cli_main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:  # `gridgate check site.yaml | head -2`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python would flush at exit and fail again
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
