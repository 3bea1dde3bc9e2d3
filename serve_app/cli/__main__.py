"""`python -m serve_app.cli`: the same as the `supportgraph` command."""

import sys

from serve_app.cli import main

sys.exit(main())
