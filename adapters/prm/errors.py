"""The one error type of the PRM package: a failure its user can act on, said in one line."""

from __future__ import annotations


class PRMError(Exception):
    """A PRM job cannot go on (bad input, a model that does not fit the format, an adapter that fails its check).

    Commands turn it into a one-line ``CommandError``."""
