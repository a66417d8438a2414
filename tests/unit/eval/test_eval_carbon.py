"""codecarbon's offline tracker around a block of work."""

from __future__ import annotations

import time
from pathlib import Path

from ayar.eval.carbon import track_emissions


def test_tracks_energy_and_co2(tmp_path: Path) -> None:
    with track_emissions(tmp_path, "unit", "TUR") as record:
        deadline = time.perf_counter() + 1.0
        total = 0
        while time.perf_counter() < deadline:
            total += 1
        assert record.energy_kwh is None  # filled in when the block ends
    assert record.error is None, record.error
    assert record.energy_kwh is not None and record.energy_kwh > 0
    assert record.co2_kg is not None and record.co2_kg > 0
    assert record.duration_s >= 1.0
    assert record.country_iso_code == "TUR"
    assert record.power_source.startswith(("measured", "estimated"))
    assert (tmp_path / "emissions.csv").is_file()
    assert set(record.as_dict()) >= {"stage", "energy_kwh", "co2_kg", "power_source"}


def test_disabled_tracking_does_nothing(tmp_path: Path) -> None:
    with track_emissions(tmp_path, "unit", enabled=False) as record:
        pass
    assert record.energy_kwh is None and not record.enabled
    assert not (tmp_path / "emissions.csv").exists()
