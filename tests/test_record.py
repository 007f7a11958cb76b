"""Recording, replay and export: real simulated migrations recorded through the real backend,
files read back (whole, truncated, bad), CSV and SVG exports, and the replay console by keys."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio

from lab_fixtures import wait_until
from migtui.model.endpoint import parse_endpoint
from migtui.model.sample import parse_query_migrate
from migtui.model.vm import Connection, VMState
from migtui.qmp.controls import MigrationOptions, start_migration
from migtui.qmp.fleet import Fleet
from migtui.qmp.messages import ActionResult, VMEvent, VMUpdated
from migtui.qmp.session import SessionOptions
from migtui.model.units import InputError
from migtui.record import (
    CSV_COLUMNS,
    Cursor,
    Recorder,
    RecordingError,
    export_csv,
    export_svg,
    list_recordings,
    load_recording,
    load_recordings,
    run_export,
    summarize,
    summary_text,
)
from migtui.sim import SimFleet
from migtui.ui.replay import SPEEDS, ReplayApp, ReplayDashboard, run_replay

MiB = 2**20
T0 = 1_700_000_000.0
SIZE = (120, 36)


@pytest_asyncio.fixture
async def sim(tmp_path):
    fleet = SimFleet(tmp_path / "sim", speedup=20.0, seed=3)
    yield fleet
    await fleet.stop()


@pytest_asyncio.fixture
async def recorded_fleet(tmp_path):
    """make(*sim_vms) -> (Fleet, Recorder): real sessions whose listener is the recorder."""
    made: list[tuple[Fleet, Recorder]] = []

    def make(*vms, **options):
        fleet = Fleet([parse_endpoint(vm.endpoint) for vm in vms],
                      options=SessionOptions(active_interval=0.05, poll_interval=0.2, **options))
        recorder = Recorder(tmp_path / "state" / "recordings", lookup=fleet.get)
        for session in fleet:
            session.listener = recorder.listener
        fleet.start()
        made.append((fleet, recorder))
        return fleet, recorder

    yield make
    for fleet, recorder in made:
        await fleet.close()
        recorder.close()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- a synthetic migration, fed to a Recorder the way the backend would ------------------


def fake_session(key: str) -> SimpleNamespace:
    vm = VMState(endpoint=parse_endpoint(f"{key}=unix:/run/{key}.qmp"), name=key)
    vm.connection = Connection.CONNECTED
    vm.qemu_version, vm.dialect, vm.run_state = "7.2.0", "modern", "running"
    vm.parameters = {"max-bandwidth": 32 * MiB, "downtime-limit": 300, "xbzrle-cache-size": 64 * MiB}
    vm.capabilities = {"xbzrle": True, "events": True}
    return SimpleNamespace(key=key, vm=vm)


def feed_migration(recorder: Recorder, key: str = "src1", seconds: int = 120, start: float = T0,
                   end: str = "completed") -> list:
    """A migration that does not converge at 32 MiB/s, gets 4 GiB/s at half time and completes."""
    session = fake_session(key)
    vm = session.vm
    now = [start - 1]
    recorder.clock = lambda: now[0]  # settings and summary lines are stamped on the recording's clock

    def sample(t: float, reply: dict) -> None:
        now[0] = t
        vm.tracker.add(parse_query_migrate(reply, t))
        recorder.observe(session, VMUpdated(key, "sample"))

    sample(start - 1, {})  # idle before
    recorder.observe(session, ActionResult(key, "migrate", {"uri": "tcp:10.0.0.2:4444"}, True, {}, start - 0.2))
    recorder.observe(session, VMEvent(key, "MIGRATION", {"status": "setup"}, start - 0.1))
    transferred = 0
    passes = 1
    for i in range(seconds * 2):
        t = i * 0.5
        fast = t >= seconds / 2
        rate = 400 * MiB if fast else 32 * MiB
        transferred += int(rate * 0.5)
        if i and i % 8 == 0:
            passes += 1
            recorder.observe(session, VMEvent(key, "MIGRATION_PASS", {"pass": passes}, start + t - 0.01))
        if fast and i == seconds:
            now[0] = start + t - 0.05
            vm.parameters = dict(vm.parameters, **{"max-bandwidth": 4 * 2**30})
            recorder.observe(session, ActionResult(key, "migrate-set-parameters",
                                                   {"max-bandwidth": 4 * 2**30}, True, {}, start + t - 0.05))
            recorder.observe(session, VMUpdated(key, "settings"))
        remaining = max(0, 512 * MiB - (transferred if passes == 1 else 0)) if not fast else 8 * MiB
        sample(start + t, {
            "status": "active", "total-time": int(t * 1000) + 5, "setup-time": 5, "expected-downtime": 3000,
            "ram": {"transferred": transferred, "remaining": remaining or 90 * MiB, "total": 512 * MiB,
                    "dirty-pages-rate": 24000, "dirty-sync-count": passes, "page-size": 4096, "mbps": 268.0},
            "xbzrle-cache": {"cache-size": 64 * MiB, "bytes": i * 1000, "pages": i * 3, "cache-miss": i * 5,
                             "cache-miss-rate": 0.4, "encoding-rate": 2.5, "overflow": i},
        })
    t = seconds * 1.0
    final = {"status": end, "total-time": int(t * 1000) + 5, "setup-time": 5,
             "ram": {"transferred": transferred + 8 * MiB, "remaining": 0, "total": 512 * MiB,
                     "dirty-sync-count": passes + 1, "page-size": 4096}}
    if end == "completed":
        final["downtime"] = 42
    else:
        final["error-desc"] = "Unable to write to socket: Broken pipe"
    recorder.observe(session, VMEvent(key, "MIGRATION", {"status": end}, start + t - 0.01))
    vm.run_state = "postmigrate" if end == "completed" else "running"
    sample(start + t, final)
    sample(start + t + 1, final)  # the VM stays completed: nothing more is recorded
    return [s for s in recorder.finished if s.vm == key]


@pytest.fixture
def synthetic(tmp_path) -> Path:
    recorder = Recorder(tmp_path / "recs")
    finished = feed_migration(recorder)
    assert len(finished) == 1 and recorder.paths == [finished[0].path]
    return finished[0].path


# ---- recording through the real backend ----------------------------------------------------


async def test_a_simulated_migration_is_recorded_to_completion(sim, recorded_fleet, tmp_path):
    src = await sim.add_vm("src", ram=256 * MiB, dirty_rate=8 * MiB, working_set=16 * MiB)
    dst = await sim.add_vm("dst", ram=256 * MiB, incoming=True)
    fleet, recorder = recorded_fleet(src, dst)
    source, dest = fleet.get("src"), fleet.get("dst")
    assert await source.wait_connected(5) and await dest.wait_connected(5)
    await start_migration(source, MigrationOptions(bandwidth=32 * MiB), destination=dest)
    await wait_until(lambda: len(recorder.finished) == 2, timeout=10)
    assert source.vm.migration_status == "completed"

    directory = tmp_path / "state" / "recordings"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    by_vm = {f.vm: f for f in recorder.finished}
    path = by_vm["src"].path
    assert path.parent == directory and stat.S_IMODE(path.stat().st_mode) == 0o600

    lines = read_lines(path)
    header, summary = lines[0], lines[-1]
    assert header["type"] == "header" and header["vm"] == "src" and header["role"] == "outgoing"
    assert header["qemu"] == "7.2.0" and header["dialect"] == "modern" and header["endpoint"].startswith("unix:")
    assert "max-bandwidth" in header["parameters"] and "xbzrle" in header["capabilities"]
    samples = [line for line in lines if line["type"] == "sample"]
    times = [s["time"] for s in samples]
    assert len(samples) >= 3 and times == sorted(times) and len(set(times)) == len(times)
    assert samples[-1]["migration"]["status"] == "completed" and samples[-1]["run-state"] == "postmigrate"
    assert all(s["migration"]["status"] in ("setup", "active", "completed") for s in samples)
    assert set(samples[-1]["derived"]) >= {"throughput-bps", "dirty-bytes-per-s", "passes"}
    # What led to the migration is in it: the command and QEMU's event.
    commands = [line["command"] for line in lines if line["type"] == "action"]
    assert "migrate" in commands
    migration_events = [line["data"].get("status") for line in lines
                        if line["type"] == "event" and line["event"] == "MIGRATION"]
    assert migration_events[0] == "setup"

    # The summary agrees with the samples it sums up.
    last = samples[-1]["migration"]
    assert summary["type"] == "summary" and summary["ended-by"] == "status" and summary["status"] == "completed"
    assert summary["bytes-sent"] == last["ram"]["transferred"] + last.get("disk", {}).get("transferred", 0)
    assert summary["total-time-ms"] == last["total-time"] and summary["downtime-ms"] == last["downtime"]
    assert summary["setup-time-ms"] == last["setup-time"]
    assert summary["passes"] == last["ram"]["dirty-sync-count"]
    assert summary["samples"] == len(samples)
    assert summary["average-throughput-bps"] == round(summary["bytes-sent"] / (summary["total-time-ms"] / 1000))
    assert summary["peak-throughput-bps"] >= max(s["derived"]["throughput-bps"] or 0 for s in samples[:-1])
    assert summary["peak-dirty-bytes-per-s"] == max(s["derived"]["dirty-bytes-per-s"] or 0 for s in samples)
    loaded = load_recording(path)
    assert loaded.warnings == [] and len(loaded.samples) == len(samples)
    assert {k: v for k, v in summary.items() if k not in ("type", "vm", "time", "ended-by")} == summarize(loaded.samples)
    assert by_vm["src"].summary["status"] == "completed" and "completed in" in by_vm["src"].text

    # The destination's side is a migration too.
    incoming = read_lines(by_vm["dst"].path)
    assert incoming[0]["role"] == "incoming" and incoming[-1]["status"] == "completed"


async def test_a_failed_migration_ends_its_recording_with_qemus_error(sim, recorded_fleet):
    vm = await sim.add_vm("doomed", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    fleet, recorder = recorded_fleet(vm)
    session = fleet.get("doomed")
    assert await session.wait_connected(5)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB), uri="exec:cat > /dev/null")
    await wait_until(lambda: "doomed" in recorder.recording and session.vm.tracker.derived.passes, timeout=5)
    vm.fail_migration("Unable to write to socket: Connection reset by peer")
    await wait_until(lambda: recorder.finished, timeout=5)
    done = recorder.finished[0]
    lines = read_lines(done.path)
    assert lines[-1]["type"] == "summary" and lines[-1]["status"] == "failed"
    assert lines[-1]["error-desc"] == "Unable to write to socket: Connection reset by peer"
    assert lines[-2]["type"] == "sample" and lines[-2]["migration"]["status"] == "failed"
    assert "failed after" in done.text and "Connection reset by peer" in done.text
    assert load_recording(done.path).status == "failed"


async def test_a_disconnect_ends_the_recording_and_a_reconnect_starts_another(sim, recorded_fleet):
    vm = await sim.add_vm("flaky", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    fleet, recorder = recorded_fleet(vm, backoff_max=0.2)
    session = fleet.get("flaky")
    assert await session.wait_connected(5)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB), uri="exec:cat > /dev/null")
    await wait_until(lambda: "flaky" in recorder.recording, timeout=5)
    vm.drop_connection()
    await wait_until(lambda: recorder.finished, timeout=5)
    assert recorder.finished[0].summary["ended-by"].startswith("disconnected")
    assert recorder.finished[0].summary["status"] == "active"
    # Back in flight after the reconnect: a new recording; closing the recorder ends it with a summary.
    await wait_until(lambda: "flaky" in recorder.recording, timeout=5)
    second = recorder.path_for("flaky")
    assert second is not None and second != recorder.finished[0].path
    recorder.close()
    assert read_lines(second)[-1]["ended-by"] == "recorder closed"


def test_one_file_for_everything_holds_each_migration(tmp_path):
    path = tmp_path / "all.ndjson"
    recorder = Recorder(file=path)
    feed_migration(recorder, "a", seconds=10)
    feed_migration(recorder, "b", seconds=10, start=T0 + 5, end="failed")
    recorder.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    migrations = load_recordings(path)
    assert [(r.vm, r.status) for r in migrations] == [("a", "completed"), ("b", "failed")]
    assert load_recording(path, "b").summary["error-desc"] == "Unable to write to socket: Broken pipe"
    with pytest.raises(RecordingError, match="no migration of 'c'.*a, b"):
        load_recording(path, "c")


def test_summary_is_a_pure_function_of_the_samples():
    replies = [
        {"status": "setup", "total-time": 0, "setup-time": 0},
        {"status": "active", "total-time": 1000, "setup-time": 12,
         "ram": {"transferred": 100 * MiB, "remaining": 400 * MiB, "total": 512 * MiB, "dirty-sync-count": 1,
                 "dirty-pages-rate": 256, "page-size": 4096}},
        {"status": "active", "total-time": 2000, "setup-time": 12,
         "ram": {"transferred": 300 * MiB, "remaining": 200 * MiB, "total": 512 * MiB, "dirty-sync-count": 2,
                 "dirty-pages-rate": 512, "page-size": 4096}},
        {"status": "completed", "total-time": 4000, "setup-time": 12, "downtime": 30,
         "ram": {"transferred": 520 * MiB, "remaining": 0, "total": 512 * MiB, "dirty-sync-count": 3}},
    ]
    samples = [parse_query_migrate(r, T0 + i) for i, r in enumerate(replies)]
    summary = summarize(samples)
    assert summary == summarize(samples)
    assert summary["status"] == "completed" and summary["error-desc"] is None
    assert summary["total-time-ms"] == 4000 and summary["setup-time-ms"] == 12 and summary["downtime-ms"] == 30
    assert summary["bytes-sent"] == 520 * MiB and summary["passes"] == 3 and summary["samples"] == 4
    assert summary["average-throughput-bps"] == 130 * MiB
    assert summary["peak-throughput-bps"] == 200 * MiB  # 200 MiB in the second second
    assert summary["peak-dirty-bytes-per-s"] == 2 * MiB
    assert summary_text(summary).startswith("completed in 4.0s") or "completed in" in summary_text(summary)


# ---- reading back ------------------------------------------------------------------------


def test_synthetic_recording_reads_back_whole(synthetic):
    recording = load_recording(synthetic)
    assert recording.warnings == []
    assert recording.vm == "src1" and recording.status == "completed"
    assert len(recording.samples) == 241
    assert recording.summary["downtime-ms"] == 42
    assert {e["event"] for e in recording.events if e["type"] == "event"} == {"MIGRATION", "MIGRATION_PASS"}
    assert [s["parameters"]["max-bandwidth"] for s in recording.settings] == [4 * 2**30]
    assert recording.start == pytest.approx(T0 - 0.2) and recording.end == pytest.approx(T0 + 120)
    # One sample line per sample, one header, one summary: nothing written twice.
    kinds = [line["type"] for line in read_lines(synthetic)]
    assert kinds[0] == "header" and kinds[-1] == "summary" and kinds.count("sample") == 241


def test_a_truncated_recording_loads_with_a_warning(synthetic, tmp_path):
    data = synthetic.read_bytes()
    lines = data.splitlines(keepends=True)
    # migtui died while writing: no summary, the last sample cut in half, and a line of a later version.
    cut = tmp_path / "cut.ndjson"
    cut.write_bytes(b"".join(lines[:-2]) + b'{"type":"future-thing","vm":"src1"}\n' + lines[-2][:40])
    recording = load_recording(cut)
    assert len(recording.samples) == 240 and recording.summary is None
    text = " ".join(recording.warnings)
    assert "cut short" in text and "unknown types" in text and "no summary" in text
    final = recording.final_summary()
    assert final["ended-by"].startswith("interrupted") and final["samples"] == 240


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "binary", "other-json", "text", "cut-header"])
def test_bad_files_get_one_line_errors(tmp_path, case):
    path = tmp_path / "rec.ndjson"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "other-json":  # an audit log, say
        path.write_text('{"time": "2024-01-01T00:00:00Z", "vm": "a", "command": "migrate"}\n')
    elif case == "text":
        path.write_text("hello\nworld\n")
    elif case == "cut-header":
        path.write_text('{"type":"header","format":"migtui-rec')
    with pytest.raises(RecordingError) as err:
        load_recording(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    expected = {"missing": "no such file", "directory": "is a directory", "empty": "empty",
                "cut-header": "cut short"}.get(case, "not a migtui recording")
    assert expected in message


def test_cursor_rebuilds_the_vm_at_any_playhead(synthetic):
    recording = load_recording(synthetic)
    cursor = Cursor(recording)
    cursor.seek(T0 + 30)
    assert cursor.vm.migration_status == "active" and cursor.samples_shown == 61
    assert cursor.vm.parameters["max-bandwidth"] == 32 * MiB
    passes_at_30 = cursor.vm.derived.passes
    cursor.seek(T0 + 90)
    assert cursor.vm.parameters["max-bandwidth"] == 4 * 2**30  # the change at 60 s is replayed
    assert cursor.vm.derived.passes > passes_at_30
    generation = cursor.generation
    cursor.seek(T0 + 30)  # backwards: rebuilt, same numbers as before
    assert cursor.generation == generation + 1 and cursor.vm.derived.passes == passes_at_30
    assert cursor.vm.parameters["max-bandwidth"] == 32 * MiB
    cursor.seek(recording.end + 100)
    assert cursor.time == recording.end and cursor.vm.migration_status == "completed"
    assert cursor.vm.run_state == "postmigrate"
    assert len(cursor.vm.tracker.history) == 241


# ---- exports ---------------------------------------------------------------------------


def test_csv_has_a_header_and_a_row_per_sample(synthetic, tmp_path):
    recording = load_recording(synthetic)
    out = tmp_path / "series.csv"
    assert export_csv(recording, out) == 241
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(recording.samples)
    assert float(rows[0]["elapsed-s"]) == 0 and float(rows[-1]["elapsed-s"]) == pytest.approx(120)
    assert rows[-1]["status"] == "completed" and rows[10]["status"] == "active"
    assert int(rows[10]["ram-transferred"]) == recording.samples[10].get("ram", "transferred")
    assert int(rows[10]["throughput-bps"]) == 32 * MiB
    assert int(rows[10]["dirty-bytes-per-s"]) == 24000 * 4096
    assert rows[10]["xbzrle-cache-miss-rate"] == "0.4" and rows[-1]["xbzrle-pages"] == ""
    assert rows[0]["time"].startswith("2023-11-14T22:13:20")


async def test_svg_export_draws_the_dashboard_graphs(synthetic, tmp_path):
    out = await export_svg(load_recording(synthetic), tmp_path / "dash.svg")
    svg = out.read_text().replace("&#160;", " ")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    for title in ("throughput", "RAM", "XBZRLE", "REPLAY src1", "completed"):
        assert title in svg, title


# ---- the replay console ----------------------------------------------------------------


def header_text(app: ReplayApp) -> str:
    return str(app.screen.query_one("#dash-header").render())


def status_text(app: ReplayApp) -> str:
    return str(app.screen.query_one("#replay-status").render())


async def test_replay_keys_move_the_playhead_and_the_dashboard(synthetic):
    recording = load_recording(synthetic)
    app = ReplayApp(recording, paused=True)
    start, end = recording.start, recording.end
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ReplayDashboard)
        assert app.playhead == start and "paused" in status_text(app) and "1x" in status_text(app)
        at_start = header_text(app)
        await pilot.press("right")
        assert app.playhead == pytest.approx(start + 10)
        assert "00:10.0 / 02:00.2" in status_text(app)
        after_seek = header_text(app)
        assert after_seek != at_start and "active" in after_seek
        await pilot.press("right_square_bracket")
        assert app.speed == 2.0 and "2x" in status_text(app)
        await pilot.press("space")
        assert not app.paused and "playing" in status_text(app)
        await wait_until(lambda: app.playhead > start + 10.5, timeout=5)
        await pilot.press("space")
        assert app.paused
        await pilot.press("home")
        assert app.playhead == start and header_text(app) == at_start
        assert len(app.screen.query_one("#log").lines) <= 2  # the log started over with the playhead
        await pilot.press("end")
        assert app.playhead == end and "completed" in header_text(app) and "postmigrate" in header_text(app)
        assert "end" in status_text(app) and "downtime 42ms" in status_text(app)
        await pilot.press("left")
        assert app.playhead == pytest.approx(end - 10)
        await pilot.press(*["left_square_bracket"] * 4)  # 2x, 1x, 0.5x, 0.25x, and no lower
        assert app.speed == SPEEDS[0] == 0.25
        await pilot.press(*["right_square_bracket"] * 7)
        assert app.speed == SPEEDS[-1] == 16.0
        # A recording cannot be steered: the control keys do nothing.
        await pilot.press("m", "b", "c")
        assert isinstance(app.screen, ReplayDashboard)
        await pilot.press("escape")
    assert app.return_code == 0


def test_recordings_are_listed_newest_first_with_how_they_ended(tmp_path):
    recorder = Recorder(tmp_path / "recs")
    feed_migration(recorder, "a", seconds=4)
    feed_migration(recorder, "b", seconds=4, start=T0 + 60, end="failed")
    os.utime(recorder.paths[0], (T0, T0))  # a is the older
    listed = list_recordings(tmp_path / "recs")
    assert [p for p, _ in listed] == recorder.paths[::-1]
    assert listed[0][1].startswith("b ") and "failed after" in listed[0][1]
    assert "completed in" in listed[1][1]
    assert list_recordings(tmp_path / "nothing-here") == []


def test_a_recorder_that_cannot_write_says_why_and_never_raises(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    recorder = Recorder(blocker / "recordings")
    finished = feed_migration(recorder, seconds=2)
    assert finished and finished[0].path is None and finished[0].summary["status"] == "completed"
    assert recorder.error and "not-a-dir" in recorder.error
    # A session that breaks the recorder's expectations costs the recording, not the caller.
    assert recorder.observe(SimpleNamespace(key="x", vm=None), VMUpdated("x", "sample")) is None
    assert recorder.error.startswith("recording failed")


async def test_command_line_helpers_refuse_bad_input_in_one_line(synthetic, tmp_path):
    with pytest.raises(InputError, match="give --csv OUT and/or --svg OUT"):
        await run_export(synthetic)
    with pytest.raises(InputError, match="--speed: '100' is not understood"):
        await run_replay(synthetic, speed="100")
    with pytest.raises(RecordingError, match="no such file"):
        await run_replay(tmp_path / "nope.ndjson")
    done = await run_export(synthetic, csv_out=str(tmp_path / "out.csv"))
    assert done == [f"{tmp_path / 'out.csv'}: 241 samples"]
    with pytest.raises(InputError, match="--csv"):
        await run_export(synthetic, csv_out=str(tmp_path / "missing-dir" / "out.csv"))


def test_many_migrations_at_once_keep_few_files_open(tmp_path, monkeypatch):
    import migtui.record.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "MAX_OPEN_FILES", 2)
    recorder = Recorder(tmp_path / "recs")
    sessions = [fake_session(f"vm{i}") for i in range(5)]
    for step in range(6):
        for session in sessions:
            status = "active" if step < 5 else "completed"
            reply = {"status": status, "total-time": step * 1000, "ram": {"transferred": step * MiB, "remaining": 0,
                                                                         "total": 8 * MiB}}
            session.vm.tracker.add(parse_query_migrate(reply, T0 + step))
            recorder.observe(session, VMUpdated(session.key, "sample"))
            assert len(recorder._fds) <= 2
    assert recorder.error is None and len(recorder.finished) == 5 and not recorder._fds
    for done in recorder.finished:
        kinds = [line["type"] for line in read_lines(done.path)]
        assert kinds == ["header"] + ["sample"] * 6 + ["summary"]
