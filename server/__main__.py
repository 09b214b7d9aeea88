"""`python -m server` runs the knowledge-mcp CLI."""

import sys

from .cli import main

sys.exit(main())
