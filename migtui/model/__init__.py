"""The migration model: pure data and computation. Never imports Textual or does I/O."""

from migtui.model.derived import Derived, MigrationTracker
from migtui.model.endpoint import Endpoint, parse_endpoint
from migtui.model.history import History, HistoryPoint, PassMark
from migtui.model.sample import MigrationSample, parse_query_migrate
from migtui.model.units import InputError

__all__ = [
    "Derived",
    "Endpoint",
    "History",
    "HistoryPoint",
    "InputError",
    "MigrationSample",
    "MigrationTracker",
    "PassMark",
    "parse_endpoint",
    "parse_query_migrate",
]
