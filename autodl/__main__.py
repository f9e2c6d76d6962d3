"""Allow ``python -m autodl``."""

from autodl.cli import main

raise SystemExit(main())
