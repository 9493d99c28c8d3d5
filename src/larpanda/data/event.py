"""`Event`: one PILArNet-M event as numpy arrays, with per-point labels derived from the cluster table.

Label conventions (docs/design.md §4.2):

* ``segment_motif``: 0 shower, 1 track, 2 Michel, 3 delta, 4 LED (low-energy deposit)
* ``segment_pid``: 0 γ, 1 e, 2 μ, 3 π, 4 p, 5 none (raw −1 → 5)
* ``instance_particle`` / ``instance_interaction``: raw group / interaction ids renumbered 0..K−1 in
  ascending order of the raw ids (as the reference reader does), −1 for LED.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..constants import PID_CLASSES, SEMANTIC_CLASSES  # noqa: F401  (importable from here too)

GRID_SIZE_VOXELS = 768  # voxels per axis
VOXEL_SIZE_CM = 0.3  # 3 mm voxels: the 768³ grid is a 230.4 cm cube
POINT_COLUMNS = ("x", "y", "z", "energy", "dE", "time", "n_electrons", "dx")
CLUSTER_COLUMNS = ("size", "cluster_id", "group_id", "interaction_id", "semantic", "pid")
CLUSTER_EXTRA_COLUMNS = ("mass", "momentum", "vtx_x", "vtx_y", "vtx_z")


def renumber_ids(raw: np.ndarray) -> np.ndarray:
    """Map non-negative ids to 0..K−1 in ascending order of the raw id; negatives become −1."""
    raw = np.asarray(raw, dtype=np.int64)
    out = np.full(raw.shape, -1, dtype=np.int64)
    keep = raw >= 0
    if keep.any():
        _, out[keep] = np.unique(raw[keep], return_inverse=True)
    return out


@dataclass
class Event:
    """One event. All per-point arrays have N rows, in the file's point order (grouped by cluster row).

    Attributes:
        point: (N, 8) float32 raw columns: x, y, z (voxel index 0..767), energy (MeV), dE (MeV),
            time (ns), n_electrons, dx (mm).
        cluster: (M, 6) int64: size, cluster_id, group_id, interaction_id, semantic, pid (row 0 = LED).
            v1 files have 5 columns (no pid); they are padded here with pid −1.
        cluster_extra: (M, 5) float32: mass (MeV), |p| (GeV/c), creation vertex x, y, z (cm), or None (v1).
        source: (file path, event index) the event was read from, or None.
    """

    point: np.ndarray
    cluster: np.ndarray
    cluster_extra: np.ndarray | None = None
    source: tuple | None = None
    _labels: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.point.shape[0])

    @property
    def num_points(self) -> int:
        return len(self)

    @property
    def voxel(self) -> np.ndarray:
        """(N, 3) int64 voxel indices."""
        return self.point[:, :3].astype(np.int64)

    @property
    def energy(self) -> np.ndarray:
        """(N,) float32 voxel energy in MeV."""
        return self.point[:, 3]

    def _per_point(self, name: str) -> np.ndarray:
        if name not in self._labels:
            sizes = self.cluster[:, 0].astype(np.int64)
            cols = {"motif": 4, "pid": 5, "group": 2, "interaction": 3}
            for key, col in cols.items():
                self._labels[key] = np.repeat(self.cluster[:, col].astype(np.int64), sizes)
        return self._labels[name]

    @property
    def segment_motif(self) -> np.ndarray:
        return self._per_point("motif")

    @property
    def segment_pid(self) -> np.ndarray:
        pid = self._per_point("pid").copy()
        pid[pid < 0] = 5
        return pid

    @property
    def instance_particle(self) -> np.ndarray:
        return renumber_ids(self._per_point("group"))

    @property
    def instance_interaction(self) -> np.ndarray:
        return renumber_ids(self._per_point("interaction"))

    @property
    def num_particles(self) -> int:
        g = self.cluster[:, 2]
        return int(np.unique(g[(g >= 0) & (self.cluster[:, 0] > 0)]).size)

    @property
    def num_interactions(self) -> int:
        i = self.cluster[:, 3]
        return int(np.unique(i[(i >= 0) & (self.cluster[:, 0] > 0)]).size)
