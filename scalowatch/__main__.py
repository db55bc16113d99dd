"""``python -m scalowatch ...``: the same CLI as the ``scalowatch`` entry point (for child processes and tools that
start the monitor with a given interpreter)."""
from scalowatch.cli import app

if __name__ == "__main__":
    app()
