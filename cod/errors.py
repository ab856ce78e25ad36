"""Exceptions with one-line messages; the CLI prints them without a traceback.

Exit codes of the `cod` command (README, "Exit codes"): 0 success; 1 a runtime error (any
:class:`CodError` but a :class:`UsageError`: an input missing, unreadable or corrupt, weights
that do not fit); 2 a usage error (:class:`UsageError`, and argparse's own); 3 an internal
error (a bug); 130 interrupted.
"""

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CodError(Exception):
    """Base class of every error the `cod` command reports as a one-line message."""


class UsageError(CodError):
    """The command line cannot be run as given: an unknown name, a bad option value, options
    that conflict, an output that exists (without --force), a device this machine lacks."""


class BitstreamError(CodError):
    """A .cod file is corrupt, truncated, of an unknown version, for another model, or refused
    by a limit (LimitError)."""


class ModelMismatchError(BitstreamError):
    """The file was written by a different model than the one given."""


class CheckpointError(CodError):
    """A checkpoint or weights file is missing, unreadable or does not fit the model."""


class ImageError(CodError):
    """An input image cannot be read or is too large."""


class ConfigError(CodError):
    """A model or training config has an unknown or missing key, or a value of the wrong type."""


class LimitError(BitstreamError):
    """A file is refused by a resource limit (--max-pixels, --max-memory; cod.limits) before
    any work: a valid file, but one this reader will not decode."""
