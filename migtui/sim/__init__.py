"""A QMP simulator: many simulated QEMUs (1.4 or 7.2 dialect) on real unix sockets.

It stands apart from the rest of migtui (no textual, no migtui.backend.qmp): stdlib only.

    fleet = SimFleet(runtime_dir, speedup=10, seed=1)
    vm = await fleet.add_vm("web1", dialect="1.4", dirty_rate=20 * 2**20)
    ...  # connect any QMP client to vm.socket_path
    await fleet.stop()
"""
from migtui.sim.dialects import QMPError
from migtui.sim.fleet import SimFleet
from migtui.sim.model import Guest, Knobs, Migration, ModelEvent
from migtui.sim.serve import serve
from migtui.sim.vm import SimVM

__all__ = ["Guest", "Knobs", "Migration", "ModelEvent", "QMPError", "SimFleet", "SimVM", "serve"]
