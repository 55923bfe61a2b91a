"""Typed exceptions with messages a person can act on.

The service maps each class to an HTTP status (see app/api/problems.py); the CLI prints the
message. Every exception the library raises on bad input derives from ZooscopeError.
"""


class ZooscopeError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidCheckpointError(ZooscopeError):
    """A checkpoint file is malformed, unsafe, truncated or holds non-finite weights."""


class UnknownArchitectureError(ZooscopeError):
    """A state_dict matches none of the known architecture families."""


class ArchitectureMismatchError(ZooscopeError):
    """A checkpoint does not have the architecture an operation expects."""


class DatasetNotFoundError(ZooscopeError):
    """A data set's files are not where they were expected (nothing is ever downloaded)."""


class ZooFormatError(ZooscopeError):
    """A zoo folder is missing files or holds inconsistent ones."""


class ArtefactError(ZooscopeError):
    """A saved autoencoder or report is missing, incomplete or of an incompatible version."""
