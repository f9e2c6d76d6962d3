"""Allow ``python -m autodl``."""

from autodl.cli import main

# Guarded: the fork server that starts worker processes imports the main module again.
if __name__ == "__main__":
    raise SystemExit(main())
