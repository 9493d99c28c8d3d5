"""PILArNet-M data: HDF5 read/write/validate, datasets, transforms, batching."""

from ..constants import SEMANTIC_CLASSES, PID_CLASSES  # noqa: F401
from .event import Event, renumber_ids  # noqa: F401
from .point import Point, collate, offset2batch, batch2offset  # noqa: F401
from .pilarnet import read_events, write_events, validate, num_events, event_from_labels, read_points_index  # noqa: F401
from .transforms import prepare  # noqa: F401
from .dataset import PILArNetDataset  # noqa: F401
from .hub import PILArNet  # noqa: F401
