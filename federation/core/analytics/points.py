"""Operating points on a public grid: the setup round that finds the operating regimes
counts each site's rows per cell of the grid, so no site's own points are needed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federation.core.analytics.scaling import (
    AnalyticsError,
    check_counts,
    check_scale,
    whole_counts,
)
from turbofan.data.files import SETTING_COLUMNS


@dataclass(frozen=True)
class SettingGrid:
    """A public grid of the three operating settings; each row counts in its nearest cell.

    Cell centres are ``origin + i * step`` for ``i`` in ``0..bins-1`` per setting.
    """

    origin: tuple[float, float, float]
    step: tuple[float, float, float]
    bins: tuple[int, int, int]

    @property
    def size(self) -> int:
        return int(np.prod(self.bins))

    def cells(self, settings: np.ndarray) -> np.ndarray:
        """The flat cell index of each row of ``settings`` (rows, 3)."""
        settings = np.asarray(settings, dtype=np.float64).reshape(-1, 3)
        index = np.rint((settings - np.array(self.origin)) / np.array(self.step)).astype(np.int64)
        outside = (index < 0) | (index >= np.array(self.bins))
        if outside.any():
            row, column = np.argwhere(outside)[0]
            low = self.origin[column] - self.step[column] / 2
            high = self.origin[column] + (self.bins[column] - 0.5) * self.step[column]
            raise AnalyticsError(
                f"{SETTING_COLUMNS[column]} = {settings[row, column]:g} lies outside the "
                f"public grid of operating settings [{low:g}, {high:g}]"
            )
        return np.ravel_multi_index(tuple(index.T), self.bins)

    def centres(self, cells: np.ndarray) -> np.ndarray:
        """The settings (cells, 3) at the centre of each flat cell index."""
        index = np.stack(np.unravel_index(np.asarray(cells), self.bins), axis=1)
        return np.array(self.origin) + index * np.array(self.step)


# The C-MAPSS flight envelope: altitude 0-43 kft in steps of 1 kft, Mach 0-0.9 in steps of
# 0.01, throttle resolver angle 20-100 in steps of 10: 36,036 cells. Every set point of
# the six C-MAPSS conditions (0/10/20/25/35/42 kft, Mach 0/0.25/0.62/0.70/0.84, TRA
# 60/100), with its noise, falls well inside one cell, whose centre is within half a step.
DEFAULT_GRID = SettingGrid(origin=(0.0, 0.0, 20.0), step=(1.0, 0.01, 10.0), bins=(44, 91, 9))


def points_length(grid: SettingGrid = DEFAULT_GRID) -> int:
    """Entries of an operating-point vector: one per cell of ``grid``."""
    return grid.size


def encode_points(
    settings: np.ndarray, *, scale: float, grid: SettingGrid = DEFAULT_GRID
) -> np.ndarray:
    """A site's operating-point vector: how many of its rows fall in each cell, / ``scale``.

    Parameters
    ----------
    settings : (rows, 3) the site's operating settings (``SETTING_COLUMNS``)
    scale : public number of rows (e.g. the federation's total); at least rows / 8
    grid : the public grid

    Returns
    -------
    float64 vector of :func:`points_length` entries.
    """
    check_scale(scale)
    cells = grid.cells(settings)
    check_counts(len(cells), scale)
    return np.bincount(cells, minlength=grid.size) / scale


def decode_points(
    summed: np.ndarray, *, scale: float, grid: SettingGrid = DEFAULT_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """The federation's operating points and counts from the sum of the sites' vectors.

    Returns
    -------
    points : (occupied cells, 3) the centres of the cells that hold any row
    counts : (occupied cells,) rows in each, exact: what ``RegimeModel.fit_points`` takes
    """
    summed = np.asarray(summed, dtype=np.float64)
    if len(summed) != grid.size:
        raise AnalyticsError(
            f"an operating-point vector has {grid.size} entries, got {len(summed)}"
        )
    counts = whole_counts(summed, scale)
    occupied = np.flatnonzero(counts)
    return grid.centres(occupied), counts[occupied]
