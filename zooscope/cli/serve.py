import typer


def register(app: typer.Typer) -> None:
    """Adds this module's top-level commands to the main app."""
