"""Energy and CO2 of a stage, measured with codecarbon's offline tracker (no network).

Where the machine exposes no power counters (no RAPL, as on most VMs), codecarbon estimates CPU
power from the load and a default TDP; ``power_source`` says which one a figure came from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MEASURED_CPU_MODES = {"intel_rapl", "intel_power_gadget", "apple_powermetrics"}


@dataclass
class EmissionsRecord:
    """What one tracked stage used; the figures are None until the stage ends (or when tracking is off)."""

    stage: str
    country_iso_code: str
    enabled: bool = True
    energy_kwh: float | None = None
    co2_kg: float | None = None
    duration_s: float | None = None
    cpu_power_w: float | None = None
    gpu_energy_kwh: float | None = None
    cpu_model: str | None = None
    power_source: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly figures for metrics.json."""
        return asdict(self)


def _power_source(tracker: Any) -> str:
    """'measured' when a hardware counter was read, else how codecarbon estimated power."""
    modes = [getattr(h, "_mode", None) for h in getattr(tracker, "_hardware", [])
             if type(h).__name__ == "CPU"]
    mode = modes[0] if modes else None
    if mode in MEASURED_CPU_MODES:
        return f"measured ({mode})"
    return f"estimated ({mode or 'unknown'}: CPU load x default TDP, no power counters on this machine)"


@contextmanager
def track_emissions(run_dir: Path, stage: str, country_iso_code: str = "TUR",
                    enabled: bool = True) -> Iterator[EmissionsRecord]:
    """Track the energy and CO2 of the code inside the block; emissions.csv is written to run_dir."""
    record = EmissionsRecord(stage=stage, country_iso_code=country_iso_code, enabled=enabled)
    if not enabled:
        yield record
        return
    from codecarbon import OfflineEmissionsTracker

    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = OfflineEmissionsTracker(
        country_iso_code=country_iso_code, project_name=f"ayar-{stage}", output_dir=str(run_dir),
        output_file="emissions.csv", measure_power_secs=5, log_level="error", allow_multiple_runs=True,
    )
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker.start()
    try:
        yield record
    finally:
        try:
            emissions = tracker.stop()
            data = tracker.final_emissions_data
            record.co2_kg = float(emissions or 0.0)
            record.energy_kwh = float(data.energy_consumed)
            record.gpu_energy_kwh = float(data.gpu_energy)
            record.duration_s = float(data.duration)
            record.cpu_power_w = float(data.cpu_power)
            record.cpu_model = str(data.cpu_model)
            record.power_source = _power_source(tracker)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
