"""``python -m coffer.devrun`` (``make run``; ``--stop`` for ``make stop``)."""

from coffer.devrun.cli import main

raise SystemExit(main())
