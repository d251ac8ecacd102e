#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

from inference_worker import lifeline


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
    lifeline.record_parent()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__":
    # vLLM starts its engine processes with multiprocessing's "spawn", which imports this
    # script again in each of them under this name: have each die with its parent, so that
    # a worker killed outright leaves no engine process behind (see inference_worker/lifeline).
    lifeline.tie_to_parent()
