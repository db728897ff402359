"""The `tritonize` command line: a main that registers one module per subcommand."""
from .main import main

__all__ = ["main"]
