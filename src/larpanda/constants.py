"""The package's shared constants: label classes, the energy cut, the minimum event size.

Light module (no imports), safe to import from anywhere, ``--help`` paths included. Every other module
takes these values from here instead of retyping them; YAML presets keep their own literal values.
"""

SEMANTIC_CLASSES = ("shower", "track", "michel", "delta", "led")
"""Names of the semantic (motif) classes, indexed by the ``segment_motif`` label 0..4 (docs/design.md §4.2).
Also the ``IoU_<class>`` suffixes of the semantic metrics (docs/design.md §7.1). Unitless."""

NUM_SEMANTIC_CLASSES = len(SEMANTIC_CLASSES)
"""Number of semantic classes (5): the width of the semantic head and of its confusion matrix. Unitless."""

LED_CLASS = SEMANTIC_CLASSES.index("led")
"""``segment_motif`` id of LED, the low-energy deposits (4; docs/design.md §4.2); ``--exclude-led`` drops it
from the class means (docs/design.md §7.1). Unitless class index."""

PID_CLASSES = ("photon", "electron", "muon", "pion", "proton", "none")
"""Names of the particle-identification classes, indexed by the ``segment_pid`` label 0..5; "none" (5) is
LED / no particle (raw pid −1) (docs/design.md §4.2). Unitless."""

ENERGY_THRESHOLD_MEV = 0.13
"""The energy cut, in MeV: a point is kept when its energy E > 0.13 MeV (strict), compared in float32 as the
file stores it, before anything else (docs/design.md §6.1)."""

MIN_RAW_POINTS = 1024
"""Reference minimum event size, in raw points (before the energy cut): an event with fewer is not indexed
(docs/design.md §2.2, docs/design.md §6.1)."""
