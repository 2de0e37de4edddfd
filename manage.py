#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

On a laptop with neither ``SECRET_KEY`` nor ``DEBUG`` set, management commands run in
development mode (``DEBUG=1``), as ``make serve`` does, so that the README's commands work on
a fresh clone. ``runworker`` is the exception: it runs beside the production servers (README,
"Running with Redis and several workers") and, like them, refuses to start without
``SECRET_KEY``. The servers themselves (uvicorn or daphne on ``voiceproject.asgi``) never get
this default.
"""

import os
import sys

# Commands that handle users' data in production: no development default for them.
PRODUCTION_COMMANDS = {"runworker"}


def development_default(argv: list[str], environ) -> bool:
    """Whether to default to ``DEBUG=1``: nothing configured, and not a production command."""
    command = argv[1] if len(argv) > 1 else ""
    return (
        not environ.get("SECRET_KEY")
        and "DEBUG" not in environ
        and command not in PRODUCTION_COMMANDS
    )


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceproject.settings")
    if development_default(sys.argv, os.environ):
        os.environ["DEBUG"] = "1"
        print(
            "manage.py: no SECRET_KEY set, so DEBUG=1 (development); set SECRET_KEY in production",
            file=sys.stderr,
        )
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
