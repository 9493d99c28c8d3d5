"""Exceptions that the command line turns into one-line ``larpanda: error: ...`` messages (exit 2)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad argument, missing file, bad config); printed without traceback."""


class DataError(UserError, ValueError):
    """Malformed input data. The message names the file, the event and the field.

    >>> raise DataError("missing dataset", path="a.h5", event=3, field="cluster")
    Traceback (most recent call last):
    ...
    larpanda.errors.DataError: a.h5 event 3: cluster: missing dataset
    """

    def __init__(self, what: str, path=None, event=None, field=None):
        self.what, self.path, self.event, self.field = what, path, event, field
        where = []
        if path is not None:
            where.append(str(path))
        if event is not None:
            where.append(f"event {event}")
        prefix = " ".join(where)
        msg = what if field is None else f"{field}: {what}"
        super().__init__(f"{prefix}: {msg}" if prefix else msg)


class NumericalError(UserError, RuntimeError):
    """Training stopped because of repeated non-finite losses."""
