"""The `tritonize` command line: a main that registers one module per subcommand."""
from tritonize.cli.main import main

__all__ = ["main"]
