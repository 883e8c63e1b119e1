"""``python -m pluginloop``: the same as the ``pluginloop`` command."""

from pluginloop.cli import main

raise SystemExit(main())
