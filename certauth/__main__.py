"""``python -m certauth``: the same as the ``certauth`` command."""

import sys

from certauth.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
