"""Per-operation cost constants of a HERMES-class PCM core, and the cost estimate of ``report()``.

Sources and assumptions (order-of-magnitude estimates, not measurements of pcmeta's simulation):

- ``tile_mvm_J``: one 256 x 256 MVM with 8-bit inputs/outputs = 2 * 256 * 256 operations at the IBM
  HERMES core's 10.5 TOPS/W (Khaddam-Aljameh et al., IEEE JSSC 57(4), 2022; SPEC.md section 3), i.e.
  12.5 nJ. The per-column periphery (ADC) dominates, so a tile MVM is charged per output column used:
  ``tile_mvm_J / 256`` per column conversion, whatever the number of rows used.
- ``tile_mvm_s``: 130 ns per MVM of one core (HERMES core, same source); the tiles of one array work in
  parallel, input vectors and arrays one after another.
- ``program_event_J``: one device programming event (iterative program-and-verify, ~10 pulses of
  ~10 pJ plus verify reads): 100 pJ. Assumption based on PCM write energies of 1-100 pJ per pulse
  (Burr et al., J. Vac. Sci. Technol. B 28, 2010; Le Gallo & Sebastian, J. Phys. D 53, 2020).
- ``program_event_s``: 10 program-and-verify iterations of ~1 us each; the devices of one crossbar row
  (``tile_cols`` of them) are programmed in parallel.
"""
from __future__ import annotations

import math

HERMES_TOPS_PER_W = 10.5

ENERGY = {
    "tile_mvm_J": 2 * 256 * 256 / (HERMES_TOPS_PER_W * 1e12),
    "tile_mvm_s": 130e-9,
    "program_event_J": 100e-12,
    "program_event_s": 10e-6,
}


def estimate_cost(column_conversions: int, mvms: int, programming_events: int, tile_cols: int = 256) -> dict:
    """Estimated energy (J) and latency (s) of the counted operations (see the module docstring).

    ``column_conversions``: tile output columns read (ADC conversions), summed over tile MVMs.
    """
    e_mvm = column_conversions * ENERGY["tile_mvm_J"] / tile_cols
    e_prog = programming_events * ENERGY["program_event_J"]
    t_mvm = mvms * ENERGY["tile_mvm_s"]
    t_prog = math.ceil(programming_events / tile_cols) * ENERGY["program_event_s"]
    return {
        "energy_J": {"mvm": e_mvm, "programming": e_prog, "total": e_mvm + e_prog},
        "latency_s": {"mvm": t_mvm, "programming": t_prog, "total": t_mvm + t_prog},
    }


def tile_counts(shape: tuple[int, int], tile_grid: tuple[int, int], mvms: int) -> dict:
    """Tile counters of an array of ``shape`` (in, out) on a ``tile_grid`` (row tiles, column tiles) of tiles
    after ``mvms`` input vectors: tiles used, tile MVMs and tile output columns read (ADC conversions)."""
    return {"tiles": tile_grid[0] * tile_grid[1], "tile_grid": tile_grid,
            "tile_mvms": mvms * tile_grid[0] * tile_grid[1], "column_conversions": mvms * tile_grid[0] * shape[1]}


#: The counters of ``report()`` summed over a chip's arrays.
TOTALS = ("tiles", "mvms", "tile_mvms", "column_conversions", "macs", "programming_events", "adc_saturations")


def chip_totals(arrays: dict, tile_cols: int = 256) -> dict:
    """The :data:`TOTALS` summed over the per-array stats ``arrays`` (name -> dict), the cost estimate of
    :func:`estimate_cost` (``energy_J``, ``latency_s``) and the cost constants used (``cost_constants``)."""
    totals = {k: sum(a[k] for a in arrays.values()) for k in TOTALS}
    cost = estimate_cost(column_conversions=totals["column_conversions"], mvms=totals["mvms"],
                         programming_events=totals["programming_events"], tile_cols=tile_cols)
    return {**totals, **cost, "cost_constants": dict(ENERGY)}
