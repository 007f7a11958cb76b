"""Advice goes down the same path as a key: a ParamChange, checked by the VM's backend, sent
in its QEMU's dialect, audited, and refreshed before the control returns.

Two bugs the old path had (advice sent as raw QMP built by guidance itself, then a refresh
scheduled with call_later) are pinned here:
- QEMU 2.4-2.10 was sent XBZRLE-cache advice as migrate-set-parameters {xbzrle-cache-size},
  a parameter it does not have (2.11 added it): refused;
- on legacy QEMU (1.4: no query-migrate-parameters), the old bandwidth kept showing after
  the advice was applied, since only controls.set_parameters remembers what it set.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from lab_fixtures import wait_until
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.dialect import Dialect
from migtui.backend.qmp.session import SessionOptions, VMSession
from migtui.model.endpoint import parse_endpoint
from migtui.model.requests import MigrationOptions, ParamChange
from migtui.model.units import format_rate
from migtui.sim import SimFleet
from migtui.ui.app import MigtuiApp
from migtui.ui.dialogs import ConfirmDialog
from migtui.ui.screens.dashboard import DashboardScreen

MiB = 2**20
QEMU_25_COMMANDS = frozenset({"migrate", "migrate_cancel", "migrate-set-parameters", "query-migrate-parameters",
                              "migrate-set-capabilities", "query-migrate-capabilities", "migrate-set-cache-size",
                              "query-migrate-cache-size", "migrate_set_speed", "migrate_set_downtime"})


def test_xbzrle_cache_advice_for_qemu_2_5_is_sent_as_the_command_2_5_has():
    """QEMU 2.5 has migrate-set-parameters (2.4+), but xbzrle-cache-size is a parameter only from 2.11."""
    session = VMSession(parse_endpoint("old=unix:/nonexistent.qmp"))
    session.dialect = Dialect((2, 5, 0), QEMU_25_COMMANDS, None, frozenset({"xbzrle"}))
    assert session.dialect.modern  # what the old path keyed on: modern meant migrate-set-parameters
    advice = ParamChange({"xbzrle-cache-size": 256 * MiB}, "raise the XBZRLE cache", advice="xbzrle-cache")
    sent = session.check_parameters(advice)
    assert sent == ['{"execute": "migrate-set-cache-size", "arguments": {"value": 268435456}}']
    # 2.11 and later take it as a parameter.
    session.dialect = Dialect((2, 11, 0), QEMU_25_COMMANDS, None, frozenset({"xbzrle"}))
    assert session.check_parameters(advice) == [
        '{"execute": "migrate-set-parameters", "arguments": {"xbzrle-cache-size": 268435456}}']


@pytest_asyncio.fixture
async def legacy_pair(tmp_path):
    fleet = SimFleet(tmp_path / "sim", speedup=20.0, seed=7)  # passes come quickly
    src = await fleet.add_vm("src", dialect="1.4", dirty_rate=200 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    dst = await fleet.add_vm("dst", dialect="1.4", incoming=True, ram=1024 * MiB)
    try:
        yield src, dst
    finally:
        await fleet.stop()


async def test_bandwidth_advice_on_qemu_1_4_shows_the_bandwidth_it_set(legacy_pair):
    src, dst = legacy_pair
    backend = QMPBackend([parse_endpoint(vm.endpoint) for vm in (src, dst)], options=SessionOptions(poll_interval=0.2))
    app = MigtuiApp(backend)
    async with app.run_test(size=(160, 45)) as pilot:
        handle = backend.get("src")
        await wait_until(lambda: all(h.connected and h.vm.sample for h in backend), timeout=10)
        assert handle.vm.dialect == "legacy"
        # 200 MiB/s dirtied against 8 MiB/s: will not converge.
        await handle.migrate(MigrationOptions(bandwidth=8 * MiB), uri=dst.incoming_uri)  # 1.4 listens from -incoming
        await wait_until(lambda: handle.vm.in_flight, timeout=10)
        assert handle.vm.parameters["max-bandwidth"] == 8 * MiB
        await pilot.press("enter")
        assert isinstance(app.screen, DashboardScreen)

        def bandwidth_advice():
            return [a for a in getattr(app.screen, "_advice", []) if a.kind == "bandwidth" and a.change is not None]

        await wait_until(lambda: bandwidth_advice(), timeout=30)
        chosen = bandwidth_advice()[0]
        app.screen.query_one("#advice").highlighted = app.screen._advice.index(chosen)
        advised = chosen.change.parameters["max-bandwidth"]
        assert advised > 8 * MiB
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmDialog)
        assert "migrate_set_speed" in str(app.screen.query_one(".dialog-detail").render())  # 1.4's own command
        await pilot.press("y")
        await wait_until(lambda: ("migrate_set_speed", {"value": advised}) in src.received, timeout=10)
        # What the operator sees afterwards: the bandwidth the advice set, not the old one.
        await wait_until(lambda: handle.vm.parameters.get("max-bandwidth") == advised, timeout=5)
        await pilot.pause()
        params = str(app.screen.query_one("#params").render())
        assert format_rate(advised) in params and format_rate(8 * MiB) not in params
        # And the follow-up watches it, as it does advice applied on a modern QEMU.
        assert handle.vm.tracker.advice_taken is not None and handle.vm.tracker.advice_taken.kind == "bandwidth"


@pytest.mark.parametrize("refused", [{"no-such-parameter": 1}])
def test_advice_a_qemu_cannot_take_is_refused_before_anything_is_sent(refused):
    session = VMSession(parse_endpoint("old=unix:/nonexistent.qmp"))
    session.dialect = Dialect((1, 4, 0), frozenset({"migrate", "migrate_set_speed", "migrate_set_downtime"}),
                              None, frozenset())
    from migtui.backend.errors import BackendError

    with pytest.raises(BackendError, match="cannot set no-such-parameter"):
        session.check_parameters(ParamChange(refused))
