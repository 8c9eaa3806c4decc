"""What the C-MAPSS columns measure: the names a maintenance engineer knows them by.

From the data set's documentation (Saxena, Goebel, Simon & Eklund, "Damage propagation
modeling for aircraft engine run-to-failure simulation", PHM 2008). The files number the
sensors 1 to 21 (``s_1`` ... ``s_21``); °R is degrees Rankine, psia pounds per square
inch absolute, rpm revolutions per minute, pps pounds per second.
"""

from __future__ import annotations

from typing import NamedTuple


class Sensor(NamedTuple):
    symbol: str
    description: str
    unit: str


SENSORS: dict[str, Sensor] = {
    "s_1": Sensor("T2", "total temperature at the fan inlet", "°R"),
    "s_2": Sensor("T24", "total temperature at the LPC outlet", "°R"),
    "s_3": Sensor("T30", "total temperature at the HPC outlet", "°R"),
    "s_4": Sensor("T50", "total temperature at the LPT outlet", "°R"),
    "s_5": Sensor("P2", "pressure at the fan inlet", "psia"),
    "s_6": Sensor("P15", "total pressure in the bypass duct", "psia"),
    "s_7": Sensor("P30", "total pressure at the HPC outlet", "psia"),
    "s_8": Sensor("Nf", "physical fan speed", "rpm"),
    "s_9": Sensor("Nc", "physical core speed", "rpm"),
    "s_10": Sensor("epr", "engine pressure ratio (P50/P2)", ""),
    "s_11": Sensor("Ps30", "static pressure at the HPC outlet", "psia"),
    "s_12": Sensor("phi", "ratio of fuel flow to Ps30", "pps/psi"),
    "s_13": Sensor("NRf", "corrected fan speed", "rpm"),
    "s_14": Sensor("NRc", "corrected core speed", "rpm"),
    "s_15": Sensor("BPR", "bypass ratio", ""),
    "s_16": Sensor("farB", "burner fuel-air ratio", ""),
    "s_17": Sensor("htBleed", "bleed enthalpy", ""),
    "s_18": Sensor("Nf_dmd", "demanded fan speed", "rpm"),
    "s_19": Sensor("PCNfR_dmd", "demanded corrected fan speed", "rpm"),
    "s_20": Sensor("W31", "HPT coolant bleed", "lbm/s"),
    "s_21": Sensor("W32", "LPT coolant bleed", "lbm/s"),
}
# The engine's parts the descriptions name.
PARTS = {
    "LPC": "low-pressure compressor",
    "HPC": "high-pressure compressor",
    "HPT": "high-pressure turbine",
    "LPT": "low-pressure turbine",
}


def sensor_label(column: str) -> str:
    """``s_11`` as people read it: ``s_11 · Ps30, static pressure at the HPC outlet (psia)``;
    a column that is not a sensor as it is."""
    sensor = SENSORS.get(column)
    if sensor is None:
        return column
    unit = f" ({sensor.unit})" if sensor.unit else ""
    return f"{column} · {sensor.symbol}, {sensor.description}{unit}"
