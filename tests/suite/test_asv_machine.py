"""suite.asv_machine: the asv machine name and the machine.json facts come from the CPU."""

from __future__ import annotations

import json
import shlex

from suite import asv_machine
from suite.machine import identity

ZEN3 = {
    "cpu": "AMD EPYC 7B13",
    "vendor": "AuthenticAMD",
    "family": 25,
    "model": 1,
    "stepping": 0,
    "isa": "avx2",
    "cores": 2,
    "ram_gib": 15.6,
    "arch": "x86_64",
}


def test_machine_json_options_carry_cpu_family_model_isa_arch_cores_and_ram():
    args = asv_machine.machine_args(ZEN3)
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert opts["--cpu"] == "AMD EPYC 7B13 (AuthenticAMD family 25 model 1 stepping 0, avx2)"
    assert (opts["--arch"], opts["--num_cpu"], opts["--ram"]) == ("x86_64", "2", "15.6GiB")
    assert opts["--os"]


def test_unknown_facts_say_unknown_rather_than_fail():
    opts = dict(zip(*[iter(asv_machine.machine_args({"cores": None}))] * 2, strict=True))
    assert opts["--cpu"].startswith("unknown (unknown vendor") and opts["--ram"] == "unknown"


def test_the_cli_prints_the_derived_name_and_shell_quoted_options(capsys):
    assert asv_machine.main(["--name"]) == 0
    assert capsys.readouterr().out.strip() == identity()["asv_name"]
    assert asv_machine.main(["--args"]) == 0
    args = shlex.split(capsys.readouterr().out)
    assert args[0] == "--cpu" and identity()["isa"] in args[1]


def test_complete_fills_what_asv_machine_dropped_and_keeps_what_it_stored(tmp_path):
    path = tmp_path / "asv-machine.json"
    path.write_text(json.dumps({"box": {"machine": "box", "cpu": "kept"}, "version": 1}))
    entry = asv_machine.complete_machine_file("box", ZEN3, str(path))
    saved = json.loads(path.read_text())["box"]
    assert saved == entry and saved["cpu"] == "kept"
    assert (saved["arch"], saved["num_cpu"], saved["ram"]) == ("x86_64", "2", "15.6GiB")
    fresh = asv_machine.complete_machine_file("new-2c", ZEN3, str(path))
    assert fresh["machine"] == "new-2c" and fresh["cpu"].startswith("AMD EPYC 7B13")
