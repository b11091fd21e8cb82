"""Entry point of the ``gridgate`` command.

The asyncio reactor must be installed before anything imports ``twisted.internet.reactor``, so
this module installs it first and only then imports the CLI.
"""

import sys


def main() -> None:
    """Install the asyncio reactor, then run the command line."""
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from gateway.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
