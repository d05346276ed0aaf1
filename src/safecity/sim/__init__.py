"""SafeCity simulator: a synthetic district (合成数据 / synthetic), sensor fleets, incidents and demo scenarios."""

from safecity.sim.district import SYNTHETIC_LABEL, Station, SyntheticDistrict, build_district, device_topic

__all__ = ["SYNTHETIC_LABEL", "Station", "SyntheticDistrict", "build_district", "device_topic"]
