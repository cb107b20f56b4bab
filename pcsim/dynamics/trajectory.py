"""`Trajectory`: what a simulation recorded, the same for every backend, saved as one .npz."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcsim.errors import PcsimError

GROUPS = ("values", "errors", "energy", "updates")  # per-name arrays, saved as "group/name"


@dataclass
class Trajectory:
    """Recorded times and, per population, values, errors and energy; updates per parameter.

    values[name] and errors[name] have shape (len(t), *vertex_shape), batch dimension kept;
    energy[name] has shape (len(t),); updates[param] is the accumulated plasticity in
    autograd's sign (equal to dL/dtheta under Z-IL's gates at dt = tau_x).
    """

    t: np.ndarray
    values: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    energy: dict[str, np.ndarray]
    updates: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def total_energy(self) -> np.ndarray:
        """F over time: every population's energy summed. Refused for a run that recorded some populations only,
        where the sum would be part of F."""
        left_out = self.meta.get("unrecorded_populations")
        if left_out:
            raise ValueError(f"total_energy is F, the energy of every population, but this run recorded some only "
                             f"({len(left_out)} left out, e.g. '{left_out[0]}'); sum traj.energy over the recorded "
                             "ones for their part, or record every population")
        return np.sum(list(self.energy.values()), axis=0) if self.energy else np.zeros_like(self.t)

    def to_npz(self, path) -> Path:
        path = Path(path)
        arrays = {"t": self.t, "meta": np.array(json.dumps(self.meta, default=_scalar)),
                  **{f"{group}/{name}": a for group in GROUPS for name, a in getattr(self, group).items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path

    @staticmethod
    def from_npz(path) -> Trajectory:
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise PcsimError(f"cannot read trajectory file {path}: {e}") from None
        if "t" not in data or "meta" not in data:
            raise PcsimError(f"{path} is not a pcsim trajectory (no 't' or 'meta' array)")
        groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
        for key in data.files:
            g, _, name = key.partition("/")
            if g in groups and name:
                groups[g][name] = data[key]
        return Trajectory(t=data["t"], meta=json.loads(str(data["meta"])), **groups)


def _scalar(obj):
    """A NumPy or torch scalar in a trajectory's meta (tau_x=np.float32(0.5), t_end=torch.tensor(2.0)) as the Python
    number JSON can store."""
    if getattr(obj, "ndim", None) == 0 and callable(getattr(obj, "item", None)):
        return obj.item()
    raise PcsimError(f"cannot save the trajectory's meta: {type(obj).__name__} {obj!r} is not a number, string or "
                     "list that a .npz file can hold as JSON")
