"""CLI commands (registered on the main `scalowatch` app)."""
import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
