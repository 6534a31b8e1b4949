"""``python -m ilastik_web``: the same as the ``ilastik-web`` command."""

import sys

from ilastik_web.cli import main

sys.exit(main())
