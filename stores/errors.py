"""The store's exception type."""

from loop.errors import InputError


class StoreError(InputError):
    """A run store was asked for something it cannot do, or found something it cannot read.

    The message names the run, batch, file or column concerned, the value found and what
    was expected.
    """
