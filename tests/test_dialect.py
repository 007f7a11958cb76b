"""How each control is spelled per QEMU era, without a socket."""

import pytest

from migtui.backend.qmp.dialect import Dialect, Unsupported, migrate_args_from_schema, parse_version

LEGACY_14 = Dialect(
    (1, 4, 0),
    frozenset({"migrate", "migrate_cancel", "query-migrate", "migrate_set_speed", "migrate_set_downtime",
               "migrate-set-cache-size", "query-migrate-cache-size", "migrate-set-capabilities",
               "query-migrate-capabilities"}),
    None,
    frozenset({"xbzrle"}),
)
MODERN_72 = Dialect(
    (7, 2, 0),
    frozenset({"migrate", "migrate-set-parameters", "query-migrate-parameters", "migrate-set-capabilities",
               "migrate-incoming", "migrate-start-postcopy"}),
    frozenset({"uri", "blk", "inc", "detach", "resume"}),
    frozenset({"xbzrle", "events", "postcopy-ram", "multifd"}),
)


def test_legacy_sends_seconds_and_bytes():
    assert not LEGACY_14.modern and LEGACY_14.name == "legacy"
    cmds = LEGACY_14.set_parameters({"max-bandwidth": 2**30, "downtime-limit": 500, "xbzrle-cache-size": 2**26})
    assert cmds == [
        ("migrate_set_speed", {"value": 2**30}),
        ("migrate_set_downtime", {"value": 0.5}),  # seconds, not ms
        ("migrate-set-cache-size", {"value": 2**26}),
    ]


def test_modern_sends_one_set_parameters():
    assert MODERN_72.set_parameters({"max-bandwidth": 1, "downtime-limit": 500}) == [
        ("migrate-set-parameters", {"max-bandwidth": 1, "downtime-limit": 500})
    ]


def test_between_24_and_211_the_cache_has_its_own_command():
    d = Dialect((2, 8, 0), frozenset({"migrate-set-parameters", "migrate-set-cache-size"}))
    assert d.set_parameters({"xbzrle-cache-size": 2**26, "downtime-limit": 9}) == [
        ("migrate-set-cache-size", {"value": 2**26}),
        ("migrate-set-parameters", {"downtime-limit": 9}),
    ]


def test_legacy_refuses_what_it_cannot_do_before_sending():
    with pytest.raises(Unsupported, match="cpu-throttle-initial"):
        LEGACY_14.set_parameters({"cpu-throttle-initial": 30})
    with pytest.raises(Unsupported, match="no capability 'postcopy-ram'"):
        LEGACY_14.set_capabilities({"postcopy-ram": True})
    with pytest.raises(Unsupported, match="migrate-incoming"):
        LEGACY_14.require("migrate-incoming", "receive")


def test_capabilities_command():
    assert MODERN_72.set_capabilities({"events": True}) == [
        ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
    ]


def test_block_migration_follows_the_schema():
    assert MODERN_72.has_block_migration
    d91 = Dialect((9, 1, 0), frozenset(), frozenset({"uri", "channels", "detach", "resume"}))
    assert not d91.has_block_migration
    assert LEGACY_14.has_block_migration


def test_schema_and_version_parsing():
    schema = [
        {"name": "migrate", "meta-type": "command", "arg-type": "1"},
        {"name": "1", "meta-type": "object", "members": [{"name": "uri"}, {"name": "blk"}]},
    ]
    assert migrate_args_from_schema(schema) == {"uri", "blk"}
    assert migrate_args_from_schema({"not": "a list"}) is None
    assert parse_version({"qemu": {"major": 7, "minor": 2, "micro": 22}}) == (7, 2, 22)
    assert parse_version("junk") == (0, 0, 0)


def test_capability_pairs_refused_by_version():
    from dataclasses import replace

    both = {"multifd": True, "xbzrle": True}
    assert replace(MODERN_72, version=(7, 2, 0)).refused_together(both) is None  # 7.2 takes them (measured)
    assert replace(MODERN_72, version=(8, 1, 5)).refused_together(both) is None
    for version in ((8, 2, 0), (10, 0, 0)):
        assert replace(MODERN_72, version=version).refused_together(both) == (
            "multifd", "xbzrle", "Multifd is not compatible with xbzrle")
    postcopy = {"postcopy-ram": True, "multifd": True, "xbzrle": False}
    assert [replace(MODERN_72, version=v).refused_together(postcopy) is not None
            for v in ((7, 2, 0), (8, 1, 0), (10, 0, 2), (10, 1, 0))] == [False, True, True, False]
    assert replace(MODERN_72, version=(0, 0, 0)).refused_together(both) is None  # unknown version: QEMU decides
    assert not MODERN_72.fixes_multifd_at_incoming and replace(MODERN_72, version=(8, 1, 0)).fixes_multifd_at_incoming


def test_enum_parameters_come_from_the_schema():
    from migtui.backend.qmp.dialect import parameter_choices_from_schema
    from migtui.sim.dialects import DIALECTS, qmp_schema_72

    schema = [  # as real 10.0 lists it: enum types by number, values and members both
        {"name": "migrate-set-parameters", "meta-type": "command", "arg-type": "7"},
        {"name": "7", "meta-type": "object", "members": [{"name": "mode", "type": "9"},
                                                         {"name": "max-bandwidth", "type": "int"},
                                                         {"name": "zero-page-detection", "type": "8"}]},
        {"name": "8", "meta-type": "enum", "values": ["none", "legacy", "multifd"]},
        {"name": "9", "meta-type": "enum", "members": [{"name": "normal"}, {"name": "cpr-reboot"}]},
        {"name": "int", "meta-type": "builtin", "json-type": "int"},
    ]
    assert parameter_choices_from_schema(schema) == {"mode": ("normal", "cpr-reboot"),
                                                     "zero-page-detection": ("none", "legacy", "multifd")}
    assert parameter_choices_from_schema("junk") == {} and parameter_choices_from_schema([{"name": 3}]) == {}
    ten = DIALECTS["10.0"]
    assert parameter_choices_from_schema(qmp_schema_72(ten.commands, ten.parameter_enums)) == {
        k: v for k, v in ten.parameter_enums.items()}
    assert migrate_args_from_schema(qmp_schema_72(ten.commands), "migrate-incoming") == {"uri", "exit-on-error"}


def test_the_dirty_limit_with_auto_converge_is_refused_from_81():
    from dataclasses import replace

    both = {"dirty-limit": True, "auto-converge": True}
    assert replace(MODERN_72, version=(8, 1, 0)).refused_together(both) == (
        "dirty-limit", "auto-converge", "dirty-limit conflicts with auto-converge either of then available currently")
    assert replace(MODERN_72, version=(8, 1, 0)).refused_together({**both, "auto-converge": False}) is None
