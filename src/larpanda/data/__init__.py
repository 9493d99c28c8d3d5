"""PILArNet-M data: HDF5 read/write/validate, datasets, transforms, batching."""

from .event import Event, renumber_ids, SEMANTIC_CLASSES, PID_CLASSES  # noqa: F401
from .point import Point, collate, offset2batch, batch2offset  # noqa: F401
