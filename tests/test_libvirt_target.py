"""Libvirt targets as the operator types them: every form libvirt takes, the domain narrowing
after `#`, and one line for each bad one (checked before anything connects)."""

from __future__ import annotations

import pytest

from migtui.backend.libvirt.target import is_libvirt_target, parse_libvirt_target
from migtui.model.endpoint import Endpoint
from migtui.model.units import InputError


@pytest.mark.parametrize("text, uri", [
    ("qemu:///system", "qemu:///system"),
    ("qemu+tcp://127.0.0.1:16509/system", "qemu+tcp://127.0.0.1:16509/system"),
    ("qemu+tls://host1.example/system", "qemu+tls://host1.example/system"),
    ("qemu+ssh://root@host1/system", "qemu+ssh://root@host1/system?no_tty=1"),
    ("qemu+ssh://root@host1/system?keyfile=/k", "qemu+ssh://root@host1/system?keyfile=%2Fk&no_tty=1"),
    ("qemu+ssh://root@host1/system?no_tty=0", "qemu+ssh://root@host1/system?no_tty=0"),
])
def test_each_libvirt_form_is_taken(text, uri):
    assert is_libvirt_target(text)
    target = parse_libvirt_target(text)
    assert target.uri == uri
    assert target.domains == () and target.wants("anything")


def test_ssh_never_prompts_but_the_operator_sees_their_own_uri():
    target = parse_libvirt_target("qemu+ssh://root@host1/system")
    assert "no_tty=1" in target.uri and "no_tty" not in target.shown_uri


def test_a_host_is_narrowed_to_domains_by_name_or_pattern():
    target = parse_libvirt_target("edge=qemu+tcp://10.0.0.5/system#web-*,db-01")
    assert target.label == "edge" and target.domains == ("web-*", "db-01")
    assert target.wants("web-07") and target.wants("db-01")
    assert not target.wants("db-02") and not target.wants("xweb-1")
    assert str(target) == "qemu+tcp://10.0.0.5/system#web-*,db-01"


def test_qmp_endpoints_are_not_libvirt_targets():
    for text in ("unix:/run/vm.qmp", "/run/vm.qmp", "tcp:127.0.0.1:4444", "web=tcp:h:1", "vm.qmp"):
        assert not is_libvirt_target(text)


@pytest.mark.parametrize("text, says", [
    ("qemu+tcp://host1/", "/system or /session"),
    ("qemu+tcp:///system", "no host"),
    ("qemu://host1/system", "this machine's libvirtd"),
    ("qemu+tcp://host1:99999/system", "port"),
    ("qemu+tcp://host1/system#", "nothing after #"),
    ("qemu+tcp://host1/system#web 01", "domain 'web 01'"),
    ("bad name=qemu+tcp://host1/system", "name 'bad name'"),
])
def test_a_bad_target_gets_one_line_saying_what_is_accepted(text, says):
    with pytest.raises(InputError) as caught:
        parse_libvirt_target(text)
    message = str(caught.value)
    assert says in message and "\n" not in message


def test_a_domain_endpoint_reads_back_as_a_target_for_that_domain():
    endpoint = Endpoint(name="web-01", kind="libvirt", path="qemu+tcp://127.0.0.1:16601/system", host="host1",
                        named=True)
    target = parse_libvirt_target(str(endpoint))
    assert target.domains == ("web-01",) and target.uri == endpoint.path
    assert not endpoint.is_local
