"""suite.machine: the identity every record carries, load at start and end, asv class names."""

from __future__ import annotations

import pytest

from suite import machine
from suite.results import make_record


def test_identity_names_the_cpu_class_and_versions():
    ident = machine.identity()
    for key in ("cpu", "vendor", "family", "model", "stepping", "isa", "cores", "torch"):
        assert key in ident
    assert ident["isa"] in machine.ISA_LEVELS
    assert ident["asv_name"] == machine.asv_machine_name(ident)


def test_asv_name_separates_cpus_that_differ_in_family_model_isa_or_cores():
    zen3 = {"vendor": "AuthenticAMD", "family": 25, "model": 1, "isa": "avx2", "cores": 2}
    zen5 = {**zen3, "family": 26, "model": 2, "isa": "avx512"}
    assert machine.asv_machine_name(zen3) == "amd-f25m1-avx2-2c"
    assert machine.asv_machine_name(zen5) == "amd-f26m2-avx512-2c"
    assert machine.same_class(zen3, dict(zen3)) and not machine.same_class(zen3, zen5)


def test_steal_fraction_between_two_snapshots():
    start = {"steal_jiffies": 10, "total_jiffies": 1000}
    end = {"steal_jiffies": 60, "total_jiffies": 2000}
    assert machine.steal_fraction(start, end) == pytest.approx(0.05)
    assert machine.steal_fraction({}, end) is None


def test_every_record_carries_identity_and_load_at_start_and_end_beside_the_old_keys():
    start = machine.mark_start()
    record = make_record("train", {"trainer": {"name": "srigl"}}, {"top1_accuracy": 50.0})
    host = record["host"]
    for old in ("hostname", "platform", "cpu", "cpu_count", "threads", "gpu"):
        assert old in host
    assert host["asv_name"] == machine.identity()["asv_name"] and host["isa"]
    assert host["load_start"] == start and set(host["load_end"]) == set(start)
    assert "steal_fraction" in host


def test_scaling_noise_flags_a_host_that_gave_less_than_the_share_of_cores():
    assert machine.scaling_noise({"core_scaling": 1.95, "core_scaling_threads": 2}, "start") is None
    why = machine.scaling_noise({"core_scaling": 1.2, "core_scaling_threads": 2}, "end")
    assert why and "1.20 of 2 cores at the end" in why
    assert machine.scaling_noise({"load_avg_1m": 0.5}, "start") is None  # not measured


def test_a_speed_run_records_the_cores_the_host_gave_at_start_and_end():
    start = machine.mark_start(2)
    end = machine.mark_end()
    for snap in (start, end):
        assert snap["core_scaling_threads"] == 2 and 0.0 < snap["core_scaling"] < 4.0
    record = make_record("train", {"trainer": {"name": "srigl"}}, {"top1_accuracy": 50.0})
    assert record["host"]["load_end"] == end and record["host"]["load_start"] == start
    machine.mark_start()  # later runs in this process: no scaling asked, none measured
    assert "core_scaling" not in machine.mark_end()
