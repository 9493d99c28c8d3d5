"""larpanda.sim: a fast LArTPC event simulator writing PILArNet-M v2 events (docs/model.md §5).

``generate_events(n, seed, start_index=0, workers=1)`` returns a list of ``larpanda.data.event.Event``;
event k depends only on (seed, k).
"""

from .generate import generate_event, generate_events

__all__ = ["generate_event", "generate_events"]
