"""Recording, replay and export: real simulated migrations recorded through the real backend,
files read back (whole, truncated, bad), CSV and SVG exports, and the replay console by keys."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio

from lab_fixtures import wait_until
from migtui.model.endpoint import parse_endpoint
from migtui.model.sample import parse_query_migrate
from migtui.model.vm import Connection, VMState
from migtui.model.requests import MigrationOptions
from migtui.backend.qmp.controls import start_migration
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.messages import ActionResult, VMEvent, VMUpdated
from migtui.backend.qmp.session import SessionOptions
from migtui.model.units import InputError
from migtui.record import (
    CSV_COLUMNS,
    Cursor,
    Recorder,
    RecordingError,
    export_csv,
    list_recordings,
    load_recording,
    load_recordings,
    summarize,
    summary_text,
)
from migtui.sim import SimFleet
from migtui.ui.export import export_svg, run_export
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
    made: list[tuple[QMPBackend, Recorder]] = []

    def make(*vms, **options):
        fleet = QMPBackend([parse_endpoint(vm.endpoint) for vm in vms],
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


def test_the_replay_backend_assesses_once_per_move(synthetic, monkeypatch):
    import migtui.model.guidance as guidance
    from migtui.backend.replay import ReplayBackend

    calls = []
    real = guidance.assess
    monkeypatch.setattr(guidance, "assess", lambda tracker: calls.append(tracker.last) or real(tracker))
    backend = ReplayBackend.of(load_recording(synthetic), paused=True)
    (key, playback), = backend.playbacks.items()
    posted = []
    backend.subscribe(posted.append)
    assert playback.move(T0 + 30)  # 61 samples fed, one assessment: of the last, before the post
    vm = backend.get(key).vm
    assert vm.in_flight and calls == [vm.sample] and posted[-1].sample is vm.sample
    vm.assessment()
    assert len(calls) == 1  # the console only reads


def test_cursor_rebuilds_the_vm_at_any_playhead(synthetic):
    recording = load_recording(synthetic)
    cursor = Cursor(recording)
    cursor.seek(T0 + 30)
    assert cursor.vm.migration_status == "active" and cursor.samples_shown == 61
    assert cursor.vm.parameters["max-bandwidth"] == 32 * MiB
    passes_at_30 = cursor.vm.derived.passes
    cursor.seek(T0 + 90)
    assert cursor.vm.parameters["max-bandwidth"] == 4 * 2**30  # the change at 60 s is replayed
    assert cursor.vm.tracker.max_bandwidth == 4 * 2**30  # ... where guidance reads it too
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


# ---- retention: old recordings are pruned when a recorder starts ----------------------------

DAY = 86400.0
NOW = T0 + 100 * DAY


def put_recording(directory: Path, name: str, *, age_days: float, size: int = 4096, summary: bool = True,
                  now: float = NOW) -> Path:
    """A file as the recorder writes it (header first, summary last), `size` bytes, modified `age_days` ago."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = json.dumps({"type": "header", "format": "migtui-recording", "vm": name}, separators=(",", ":"))
    last = json.dumps({"type": "summary" if summary else "sample", "vm": name}, separators=(",", ":"))
    filler = max(0, size - len(header) - len(last) - 3)
    path = directory / name
    path.write_text(f"{header}\n{'x' * filler}\n{last}\n")
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_pruning_by_age_keeps_the_newest_and_never_touches_foreign_files(tmp_path):
    from migtui.record import Retention, prune_recordings

    recs = tmp_path / "recs"
    old = [put_recording(recs, f"src{i}-20231101-12000{i}.ndjson", age_days=40 + i) for i in range(3)]
    young = put_recording(recs, "src9-20240101-120000.ndjson", age_days=2)
    # Not ours, whatever their age: another name, a look-alike name with other contents, a symlink
    # named like a recording (pointing out of the directory), a directory named like one.
    notes = recs / "notes.txt"
    notes.write_text("keep me")
    impostor = recs / "vm-20200101-000000.ndjson"
    impostor.write_text('{"time": "2020-01-01T00:00:00Z", "command": "migrate"}\n')
    outside = put_recording(tmp_path / "elsewhere", "out-20200101-000000.ndjson", age_days=90)
    link = recs / "lnk-20200101-000000.ndjson"
    link.symlink_to(outside)
    subdir = recs / "dir-20200101-000000.ndjson"
    subdir.mkdir()
    for path in (notes, impostor):
        os.utime(path, (NOW - 90 * DAY, NOW - 90 * DAY))
    os.utime(link, (NOW - 90 * DAY, NOW - 90 * DAY), follow_symlinks=False)

    pruned = prune_recordings(recs, Retention(keep_days=30, max_bytes=None), now=NOW)
    assert sorted(pruned.removed) == sorted(old) and pruned.freed == 3 * 4096 and pruned.error is None
    assert young.exists() and not any(p.exists() for p in old)
    assert notes.read_text() == "keep me" and impostor.exists() and subdir.is_dir()
    assert link.is_symlink() and outside.exists()

    # Older than the limit but the newest: kept, so the last migration can always be replayed.
    os.utime(young, (NOW - 60 * DAY, NOW - 60 * DAY))
    again = prune_recordings(recs, Retention(keep_days=30, max_bytes=None), now=NOW)
    assert again.removed == [] and young.exists() and again.kept == 1


def test_pruning_by_size_drops_the_oldest_but_not_one_still_being_written(tmp_path):
    from migtui.record import Retention, prune_recordings

    recs = tmp_path / "recs"
    hour = 3600 / DAY
    files = [put_recording(recs, f"vm{i}-20240101-00000{i}.ndjson", age_days=i * hour, size=MiB) for i in range(8)]
    # Older than all of them and beyond the size limit, but with no summary at its end and changed
    # 20 hours ago: another migtui may still be writing it. It is never deleted (and it is counted).
    writing = put_recording(recs, "live-20240101-000000.ndjson", age_days=20 * hour, size=MiB, summary=False)
    pruned = prune_recordings(recs, Retention(keep_days=None, max_bytes=int(3.5 * MiB)), now=NOW)
    # Newest first: vm0, vm1, vm2 fit in 3.5 MiB; vm3 and older go.
    assert sorted(pruned.removed) == sorted(files[3:])
    assert writing.exists() and all(f.exists() for f in files[:3])
    assert pruned.kept == 4 and pruned.kept_bytes == 4 * MiB and pruned.freed == 5 * MiB

    # An interrupted recording (no summary) left alone for over a day is pruned like any other.
    os.utime(writing, (NOW - 2 * DAY, NOW - 2 * DAY))
    pruned = prune_recordings(recs, Retention(keep_days=None, max_bytes=int(3.5 * MiB)), now=NOW)
    assert pruned.removed == [writing] and all(f.exists() for f in files[:3])


def test_a_recorder_prunes_its_directory_when_it_starts_and_a_record_file_is_never_pruned(tmp_path):
    from migtui.record import Retention

    recs = tmp_path / "recs"
    old = put_recording(recs, "a-20230101-000000.ndjson", age_days=45, now=time.time())
    new = put_recording(recs, "b-20240101-000000.ndjson", age_days=1, now=time.time())
    recorder = Recorder(recs, retention=None)
    assert recorder.pruned is None and old.exists()
    Recorder(file=old)  # everything into one file: the directory's retention does not apply
    assert old.exists()
    recorder = Recorder(recs)  # the default: 30 days, 500 MiB
    assert recorder.pruned.removed == [old] and new.exists()
    # What it records next is in the directory, next to what was kept.
    finished = feed_migration(recorder, seconds=2)
    assert sorted(p.name for p in recs.iterdir()) == sorted([new.name, finished[0].path.name])


def test_pruning_a_large_directory_lists_it_once(tmp_path, monkeypatch):
    """Only files to delete are opened: a directory of recordings within the limits costs a listing."""
    from migtui.record import Retention, prune_recordings
    import migtui.record.retention as retention

    recs = tmp_path / "recs"
    for i in range(300):
        put_recording(recs, f"vm{i}-20240101-000000.ndjson", age_days=i / 100, size=100)
    opened: list[str] = []
    real = retention._check
    monkeypatch.setattr(retention, "_check", lambda fd, entry, now: opened.append(entry.name) or real(fd, entry, now))
    pruned = prune_recordings(recs, Retention(), now=NOW)
    assert pruned.removed == [] and pruned.kept == 300 and opened == []
    pruned = prune_recordings(recs, Retention(keep_days=2, max_bytes=None), now=NOW)
    assert len(pruned.removed) == len(opened) == 99 and pruned.kept == 201


# ---- the config file's recording keys ----------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_config_record_keys_are_read_and_checked(tmp_path):
    from migtui.config import Config, load_config
    from migtui.record import Retention

    config = load_config(write_config(tmp_path, "record = false\nrecord-keep-days = 7\nrecord-max-mb = 64\n"))
    assert config.record is False and config.retention() == Retention(keep_days=7, max_bytes=64 * MiB)
    assert load_config(write_config(tmp_path, "record-keep-days = 0\nrecord-max-mb = 0\n")).retention().unlimited
    defaults = load_config(write_config(tmp_path, "theme = \"migtui-dark\"\n"))
    assert defaults.record is True and defaults.retention() == Retention(keep_days=30, max_bytes=500 * MiB)
    assert Config().retention() == defaults.retention()


@pytest.mark.parametrize("line, expected", [
    ("record = \"no\"", "record must be true or false"),
    ("record = 0", "record must be true or false"),
    ("record-keep-days = -1", "record-keep-days must be a whole number of days from 0 (no limit) to 36500"),
    ("record-keep-days = 1.5", "record-keep-days must be a whole number of days"),
    ("record-keep-days = true", "record-keep-days must be a whole number of days"),
    ("record-keep-days = 99999", "to 36500"),
    ("record-max-mb = \"500M\"", "record-max-mb must be a whole number of MiB from 0 (no limit)"),
])
def test_bad_record_keys_are_refused_in_one_line(tmp_path, line, expected):
    from migtui.config import ConfigError, load_config

    path = write_config(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_record_false_in_the_config_is_no_record(tmp_path):
    from migtui.cli.common import make_recorder
    from migtui.cli.parser import build_console_parser
    from migtui.config import load_config

    off = load_config(write_config(tmp_path, "record = false\n"))
    args = build_console_parser().parse_args(["a=unix:/run/a.qmp"])
    args.config = off
    assert make_recorder(args) is None
    args = build_console_parser().parse_args(["--no-record", "a=unix:/run/a.qmp"])
    args.config = load_config(write_config(tmp_path, "record = true\n"))
    assert make_recorder(args) is None
    # An explicit --record FILE still records, into that file.
    args = build_console_parser().parse_args(["--record", str(tmp_path / "x.ndjson"), "a=unix:/run/a.qmp"])
    args.config = off
    recorder = make_recorder(args)
    assert recorder is not None and recorder.file == tmp_path / "x.ndjson"
    from migtui.cli.parser import UsageError

    with pytest.raises(UsageError, match="not allowed with"):
        build_console_parser().parse_args(["--record", "x", "--no-record", "a=unix:/run/a.qmp"])


# ---- the summary: QEMU's odd replies -------------------------------------------------------


def feed(recorder: Recorder, session, replies: list[tuple[float, dict]]) -> None:
    for t, reply in replies:
        session.vm.tracker.add(parse_query_migrate(reply, t))
        recorder.observe(session, VMUpdated(session.key, "sample"))


def test_a_completed_reply_with_zero_times_waits_for_the_real_one(tmp_path):
    recorder = Recorder(tmp_path / "recs", retention=None)
    session = fake_session("z")
    ram = {"transferred": 64 * MiB, "remaining": 0, "total": 64 * MiB, "dirty-sync-count": 2}
    feed(recorder, session, [
        (T0, {"status": "active", "total-time": 100, "setup-time": 3, "ram": dict(ram, remaining=MiB)}),
        (T0 + 1, {"status": "completed", "total-time": 0, "setup-time": 0, "downtime": 0, "ram": ram}),
    ])
    assert not recorder.finished and recorder.recording == ["z"]  # not yet: the times are QEMU 7.2's zeros
    feed(recorder, session, [(T0 + 1.05, {"status": "completed", "total-time": 1100, "setup-time": 3,
                                          "downtime": 17, "ram": ram})])
    done = recorder.finished[0]
    assert (done.summary["total-time-ms"], done.summary["downtime-ms"], done.summary["setup-time-ms"]) == (1100, 17, 3)
    assert done.summary["samples"] == 3 and "downtime 17ms" in done.text
    # Had the zeros been the last word, the summary would not take them for figures.
    cut = summarize(load_recording(done.path).samples[:2])
    assert cut["total-time-ms"] == 1100 and cut["downtime-ms"] is None and cut["setup-time-ms"] == 3


def test_qemu_14s_completed_reply_without_total_time_extends_the_last_one():
    # The seed reports no total-time once completed: the summary adds the time since the last report.
    samples = [parse_query_migrate(r, T0 + i) for i, r in enumerate([
        {"status": "active", "total-time": 1000, "ram": {"transferred": 10 * MiB, "remaining": 5 * MiB, "total": 16 * MiB}},
        {"status": "active", "total-time": 2000, "ram": {"transferred": 20 * MiB, "remaining": MiB, "total": 16 * MiB}},
        {"status": "completed", "downtime": 25, "ram": {"transferred": 22 * MiB, "remaining": 0, "total": 16 * MiB}},
    ])]
    summary = summarize(samples)
    assert summary["total-time-ms"] == 3000 and summary["downtime-ms"] == 25
    assert summary["average-throughput-bps"] == round(22 * MiB / 3)


def test_a_migration_over_before_its_first_sample_in_flight_is_recorded(tmp_path):
    recorder = Recorder(tmp_path / "recs", retention=None)
    session = fake_session("quick")
    done = {"status": "completed", "total-time": 40, "downtime": 5, "ram": {"transferred": MiB, "remaining": 0,
                                                                           "total": MiB}}
    feed(recorder, session, [(T0, done)])  # completed long ago: nothing to record
    assert not recorder.finished and not recorder.recording
    recorder.observe(session, ActionResult("quick", "migrate", {"uri": "unix:/x"}, True, {}, T0 + 1))
    feed(recorder, session, [(T0 + 1.5, dict(done, **{"total-time": 45}))])
    assert len(recorder.finished) == 1 and recorder.finished[0].summary["total-time-ms"] == 45
    kinds = [line["type"] for line in read_lines(recorder.finished[0].path)]
    assert kinds == ["header", "action", "sample", "summary"]
    feed(recorder, session, [(T0 + 2, dict(done, **{"total-time": 45}))])  # still completed: nothing new
    assert len(recorder.finished) == 1


# ---- `migtui migrate --wait` records what it follows ---------------------------------------


async def run_migtui(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "migtui", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_wait_records_the_migration_it_follows(sim, tmp_path):
    src = await sim.add_vm("src", ram=512 * MiB, dirty_rate=8 * MiB, working_set=16 * MiB)
    dst = await sim.add_vm("dst", ram=512 * MiB, incoming=True)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    rc, out, err = await run_migtui("migrate", src.endpoint, "--to", dst.endpoint, "--bandwidth", "64M",
                                    "--wait", env=env)
    assert rc == 0, err
    recs = tmp_path / "state" / "migtui" / "recordings"
    files = list(recs.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert f"migtui: src: recorded in {files[0]}" in err.splitlines()
    lines = read_lines(files[0])
    assert lines[0]["type"] == "header" and lines[0]["vm"] == "src" and lines[0]["role"] == "outgoing"
    assert lines[0]["parameters"]["max-bandwidth"] == 64 * MiB
    samples = [line for line in lines if line["type"] == "sample"]
    assert samples and samples[-1]["migration"]["status"] == "completed"
    assert "migrate" in [line["command"] for line in lines if line["type"] == "action"]
    assert any(line["type"] == "event" and line["event"] == "MIGRATION" for line in lines)
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["status"] == "completed" and summary["ended-by"] == "status"
    last = samples[-1]["migration"]
    assert summary["total-time-ms"] == last["total-time"] and summary["downtime-ms"] == last["downtime"]
    assert summary["bytes-sent"] == last["ram"]["transferred"] and summary["passes"] >= 1
    for key in ("setup-time-ms", "average-throughput-bps", "peak-throughput-bps", "peak-dirty-bytes-per-s"):
        assert summary[key] is not None, key
    # What it prints is what it recorded.
    recording = load_recording(files[0])
    assert out.splitlines()[-1] == f"src: {summary_text(recording.summary)}"
    assert recording.warnings == []


async def test_migrate_wait_records_nothing_when_told_not_to(sim, tmp_path):
    config = write_config(tmp_path, "record = false\n")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    recs = tmp_path / "state" / "migtui" / "recordings"
    for i, (extra, extra_env) in enumerate([(["--no-record"], {}), ([], {"MIGTUI_CONFIG": str(config)})]):
        src = await sim.add_vm(f"src{i}", ram=128 * MiB)
        rc, out, err = await run_migtui("migrate", src.endpoint, "--uri", "exec:cat > /dev/null", "--wait",
                                        *extra, env={**env, **extra_env})
        assert rc == 0, err
        assert out.splitlines()[-1].startswith(f"src{i}: completed in ")
        assert "recorded" not in err and not recs.exists()
    rc, out, err = await run_migtui("migrate", "unix:/nowhere.qmp", "--uri", "tcp:h:1", "--record", "x.ndjson",
                                    env=env)
    assert rc == 2 and err.strip() == ("migtui: --record FILE records what --wait follows: add --wait "
                                       "(and no --check)")


def test_the_peak_throughput_is_never_below_the_average():
    # A short migration seen twice (as QEMU 7.2 gave it): in flight with 8 MiB already sent, then
    # cancelled with no figures. No sample interval measured the transfer, yet some stretch of the
    # migration ran at its average at least.
    samples = [
        parse_query_migrate({"status": "active", "total-time": 14, "setup-time": 6,
                             "ram": {"transferred": 8 * MiB, "remaining": 100 * MiB, "total": 128 * MiB}}, T0),
        parse_query_migrate({"status": "cancelled"}, T0 + 0.486),
    ]
    summary = summarize(samples)
    assert summary["total-time-ms"] == 500 and summary["average-throughput-bps"] == 16 * MiB
    assert summary["peak-throughput-bps"] == 16 * MiB
