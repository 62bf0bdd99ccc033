"""The HIS driver: a hospital's outpatient front end playing a morning against the mesh."""

from infra.simulators.his_driver.morning import DriverOptions, play_morning
from infra.simulators.his_driver.report import MorningReport

__all__ = ["DriverOptions", "MorningReport", "play_morning"]
