"""Errors of the road network: bad OSM input, snapping, unreachable targets, bad artifacts."""

from __future__ import annotations

from safecity.kernel.errors import InvalidInput, NotFound, SafeCityError


class RoadError(SafeCityError):
    """Base of road-network errors."""

    code = "road.error"
    status = 500
    title_en = "Road network error"
    title_zh = "路网错误"
    message_en = "The road network could not answer."
    message_zh = "路网无法给出结果。"


class OsmFileError(InvalidInput):
    """An OSM file is missing, empty, corrupt or in an unknown format."""

    code = "road.osm_invalid"
    title_en = "Invalid OSM file"
    title_zh = "OSM 文件无效"
    message_en = "The OSM file {path} cannot be read: {reason}"
    message_zh = "无法读取 OSM 文件 {path}：{reason}"


class NoDrivableRoads(InvalidInput):
    """An OSM file holds no drivable road."""

    code = "road.no_drivable_roads"
    title_en = "No drivable roads"
    title_zh = "没有可通行道路"
    message_en = "The OSM file {path} contains no drivable road."
    message_zh = "OSM 文件 {path} 中没有可供车辆通行的道路。"


class SnapTooFar(InvalidInput):
    """A point lies farther from every road than the maximum snap distance."""

    code = "road.snap_too_far"
    title_en = "Point is off the road network"
    title_zh = "位置不在路网上"
    message_en = "The point ({lon}, {lat}) is {distance_m} m from the nearest road; the limit is {limit_m} m."
    message_zh = "位置（{lon}, {lat}）距最近道路 {distance_m} 米，超过上限 {limit_m} 米。"


class Unreachable(NotFound):
    """No drivable path leads from the origin to the target."""

    code = "road.unreachable"
    title_en = "Target unreachable"
    title_zh = "目标不可达"
    message_en = "No drivable route leads from {origin} to {target}."
    message_zh = "从 {origin} 到 {target} 没有可通行的路线。"


class GraphArtifactError(RoadError):
    """A saved graph artifact is missing, corrupt or of another format version."""

    code = "road.artifact_invalid"
    status = 500
    title_en = "Invalid road graph file"
    title_zh = "路网文件无效"
    message_en = "The road graph file {path} cannot be loaded: {reason}"
    message_zh = "无法加载路网文件 {path}：{reason}"


class BadTurnRestriction(InvalidInput):
    """An OSM restriction relation that cannot be read; the import counts and skips it."""

    code = "road.bad_turn_restriction"
    title_en = "Bad turn restriction"
    title_zh = "转向限制无效"
    message_en = "OSM restriction relation {relation} is skipped: {reason}"
    message_zh = "已跳过 OSM 转向限制关系 {relation}：{reason}"
