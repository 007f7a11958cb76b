"""What the commands share: targets and their sessions, the read-only guard, --metrics and the recorder."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Sequence

from migtui.cli.parser import UsageError


def _endpoints(texts: Sequence[str]):
    from migtui.model.endpoint import parse_endpoint

    return [parse_endpoint(t) for t in texts]


def split_targets(texts: Sequence[str]):
    """(QMP endpoints, libvirt targets), each checked: InputError with one line for a bad one."""
    from migtui.backend.libvirt.target import is_libvirt_target, parse_libvirt_target

    endpoints = _endpoints([t for t in texts if not is_libvirt_target(t)])
    hosts = [parse_libvirt_target(t) for t in texts if is_libvirt_target(t)]
    return endpoints, hosts


def libvirt_backend(targets, args: argparse.Namespace, options=None):
    """The libvirt backend on these hosts, or UsageError when libvirt-python is missing."""
    from migtui.backend.libvirt.events import LibvirtMissing
    from migtui.config import Config

    try:
        from migtui.backend.libvirt.backend import LibvirtBackend, LibvirtOptions
    except LibvirtMissing as err:
        raise UsageError(str(err)) from None
    config = getattr(args, "config", None) or Config()
    if options is None:
        read_only = bool(getattr(args, "read_only", False) or config.controls_off)
        options = LibvirtOptions(read_only=read_only, audit=config.audit_log())
    try:
        return LibvirtBackend(targets, options=options)
    except LibvirtMissing as err:
        raise UsageError(str(err)) from None


def _options(args: argparse.Namespace, **extra: Any):
    """Session options from the config file: TLS for TCP endpoints, the audit log."""
    from migtui.config import Config
    from migtui.backend.qmp.session import SessionOptions

    config = getattr(args, "config", None) or Config()
    return SessionOptions(ssl=config.ssl_context(), audit=config.audit_log(), **extra)


def _warn_remote(endpoints, args: argparse.Namespace) -> None:
    for endpoint in endpoints:
        if endpoint.kind == "tcp" and not endpoint.is_local:
            tls = getattr(args, "config", None) is not None and args.config.tls_ca_file is not None
            if not tls:
                print(f"migtui: warning: {endpoint} is not loopback and QMP has no authentication: "
                      "anyone who reaches it controls the VM (use [tls] in the config, or an SSH tunnel)",
                      file=sys.stderr)


def _refuse_if_read_only(args: argparse.Namespace, what: str) -> None:
    config = getattr(args, "config", None)
    if config is not None and config.controls_off:
        where = f"read-only in {config.path}" if config.read_only else "MIGTUI_READ_ONLY is set"
        raise UsageError(f"{what} refused: controls are off ({where})")


async def _connect(text: str, args: argparse.Namespace, **options: Any):
    """A connected session for one target, or BackendError with the reason."""
    from migtui.backend.qmp.session import VMSession

    endpoints = _endpoints([text])
    _warn_remote(endpoints, args)
    session = VMSession(endpoints[0], options=_options(args, **options))
    await session.connect()
    return session


def _check_metrics(args: argparse.Namespace) -> None:
    """A malformed --metrics is refused before anything starts (binding comes later)."""
    if getattr(args, "metrics", None) is not None:
        from migtui.metrics import parse_listen

        parse_listen(args.metrics)


def _start_metrics(args: argparse.Namespace, sessions):
    """The exposition --metrics asks for, read on this loop; None without --metrics."""
    if getattr(args, "metrics", None) is None:
        return None
    from migtui.metrics import start_metrics

    return start_metrics(args.metrics, sessions, asyncio.get_running_loop(),
                         warn=lambda line: print(f"migtui: warning: {line}", file=sys.stderr, flush=True))


async def _stop_metrics(server) -> None:
    if server is not None:
        await asyncio.to_thread(server.close)  # its shutdown waits out the server's poll


def make_recorder(args: argparse.Namespace, **kwargs: Any):
    """The Recorder the options and the config ask for, or None: --no-record or `record = false`.

    --record FILE records into that file even when the config says `record = false`; the
    recordings directory is pruned as the config says (record-keep-days, record-max-mb).
    """
    from migtui.config import Config
    from migtui.record import Recorder

    config = getattr(args, "config", None) or Config()
    if getattr(args, "no_record", False):
        return None
    if getattr(args, "record", None):
        return Recorder(file=Path(args.record), **kwargs)
    if not config.record:
        return None
    return Recorder(retention=config.retention(), **kwargs)
