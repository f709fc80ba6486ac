"""asv's configuration and the Makefile's asv targets: a virtualenv per torch pin, each commit
installed into it, a machine name derived from the CPU, history = ``asv run
--skip-existing-commits``."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from asv_benchmarks.test_suite import CLASSES, selection_names
from suite import asv_summary
from suite.machine import identity

ROOT = Path(__file__).resolve().parents[3]
CONF = json.loads((ROOT / "asv.conf.json").read_text(encoding="utf-8"))
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
MACHINE = identity()["asv_name"]  # what the Makefile derives on this machine
RECORDED = asv_summary.UNKNOWN_MIXED  # the committed history
# make -n with this interpreter's environment: the Makefile asks $(PY) for the machine name
VENV = f"VENV={Path(sys.executable).parents[1]}"


def _env_name() -> str:
    """The environment name asv derives from the config (tool, python, sorted matrix pins)."""
    reqs = sorted(CONF["matrix"]["req"].items())
    (python,) = CONF["pythons"]
    return "-".join(["virtualenv", f"py{python}", *(f"{k}{v}" for k, v in reqs)])


def _make_n(target: str, *args: str) -> list[list[str]]:
    """The commands ``make target`` would run (``make -n``), each split like the shell does."""
    stamp = Path(sys.executable).parents[1] / ".srigl-bench-installed"
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", str(stamp), target, VENV, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def _asv(commands: list[list[str]], sub: str) -> list[list[str]]:
    """The ``python -m asv <sub> ...`` commands among ``commands`` (from ``-m`` on)."""
    found = []
    for cmd in commands:
        for i in range(len(cmd) - 2):
            if cmd[i : i + 3] == ["-m", "asv", sub]:
                found.append(cmd[i + 2 :])
    return found


def test_asv_conf_is_plain_json_for_a_virtualenv_of_the_projects_python():
    assert CONF["version"] == 1 and CONF["environment_type"] == "virtualenv"
    assert CONF["pythons"] == ["3.11"]
    assert CONF["branches"] == ["main"] and CONF["repo"] == "."
    assert (ROOT / CONF["benchmark_dir"] / "__init__.py").is_file()
    assert CONF["results_dir"] == "results/asv"
    assert CONF["html_dir"].startswith(CONF["results_dir"])


def test_asv_matrix_pins_the_torch_and_torchvision_that_make_install_pins():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pins = dict(re.findall(r'"(torch|torchvision)==([\d.]+)"', makefile))
    assert CONF["matrix"]["req"] == pins and set(pins) == {"torch", "torchvision"}
    assert f'"torch=={pins["torch"]}"' in PYPROJECT  # the library's own pin


def test_each_commit_is_installed_with_the_harness_extra_it_declares():
    (install,) = CONF["install_command"]
    extra = re.search(r"\{wheel_file\}\[(\w+)\]", install).group(1)
    assert re.search(rf"^{extra} = \[", PYPROJECT, re.MULTILINE), f"no extra {extra!r}"
    (build,) = CONF["build_command"]
    assert "{build_dir}" in build and "{build_cache_dir}" in build and "--no-deps" in build


def test_recorded_results_carry_the_config_environment_and_no_machine_path():
    files = [p for p in (ROOT / CONF["results_dir"] / RECORDED).glob("*.json")]
    results = [p for p in files if p.name != "machine.json"]
    assert results, "results/asv holds no results for the machine"
    for path in results:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["env_name"] == _env_name(), path.name
        assert path.name == f"{data['commit_hash'][:8]}-{_env_name()}.json"
        assert "/" not in data["python"], data["python"]


def test_committed_history_has_at_least_five_commits():
    df = asv_summary.load_results(ROOT / CONF["results_dir"], RECORDED)
    assert df["commit"].nunique() >= 5


def test_every_recorded_machine_says_what_is_known_of_its_cpu():
    results = ROOT / CONF["results_dir"]
    for machine in asv_summary.machines(results):
        info = json.loads((results / machine / "machine.json").read_text(encoding="utf-8"))
        assert info["machine"] == machine and info["cpu"] and info["num_cpu"], machine
        for path in (results / machine).glob("*-*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            assert data["params"]["machine"] == machine, path.name
    mixed = json.loads((results / RECORDED / "machine.json").read_text(encoding="utf-8"))
    assert mixed["cpu"].startswith("unknown") and "AVX2" in mixed["cpu"]


def test_asv_html_is_gitignored_but_results_are_not():
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "results/asv/html/" in ignored and ".asv/" in ignored
    assert not any(line.rstrip("/") in ("results", "results/asv") for line in ignored)


# --------------------------------------------------------------------------- Makefile targets


def test_make_asv_registers_the_derived_machine_with_its_cpu_then_runs_head():
    cmds = _make_n("asv")
    (machine,) = _asv(cmds, "machine")
    assert machine[:4] == ["machine", "--yes", "--machine", MACHINE]
    opts = dict(zip(machine[4::2], machine[5::2], strict=True))
    assert set(opts) == {"--cpu", "--arch", "--num_cpu", "--ram", "--os"}
    assert opts["--num_cpu"] == str(identity()["cores"]) and identity()["isa"] in opts["--cpu"]
    complete = [c for c in cmds if c[-2:] == ["--complete", MACHINE]]
    assert complete and "suite.asv_machine" in complete[0]  # what asv machine dropped
    (run,) = _asv(cmds, "run")
    assert run[-1] == "HEAD^!" and "--python=same" not in run
    assert run[run.index("--machine") + 1] == MACHINE


def test_make_asv_history_runs_asv_over_a_hashfile_of_the_last_n_commits():
    cmds = _make_n("asv-history", "N=3")
    (rev_list,) = [c for c in cmds if c[:2] == ["git", "rev-list"]]
    assert rev_list[rev_list.index("-n") + 1] == "3" and "--first-parent" in rev_list
    (run,) = _asv(cmds, "run")
    assert "--skip-existing-commits" in run and run[run.index("--machine") + 1] == MACHINE
    assert run[-1] == f"HASHFILE:{rev_list[-1]}"  # the file rev-list wrote (after `>`)


def test_the_machine_name_stays_overridable():
    (run,) = _asv(_make_n("asv", "ASV_MACHINE=my-box"), "run")
    assert run[run.index("--machine") + 1] == "my-box"


def test_make_perf_compare_passes_base_threshold_and_cases():
    cmds = _make_n("perf-compare", "BASE=abc", "THRESHOLD=7", "PERF_CASES=^fused/")
    (cmd,) = [c for c in cmds if "suite.perf_compare" in c]
    assert cmd[cmd.index("--base") + 1] == "abc" and cmd[cmd.index("--threshold") + 1] == "7"
    assert cmd[cmd.index("--cases") + 1] == "^fused/"


def test_make_asv_compare_passes_both_commits_and_the_factor():
    (cmp,) = _asv(_make_n("asv-compare", "A=abc", "B=def", "FACTOR=1.25"), "compare")
    assert cmp[-2:] == ["abc", "def"] and cmp[cmp.index("--factor") + 1] == "1.25"
    assert cmp[cmp.index("--machine") + 1] == MACHINE


def test_make_asv_publish_writes_the_html_makes_it_offline_then_the_summary():
    cmds = _make_n("asv-publish")
    assert _asv(cmds, "publish")
    offline = [i for i, c in enumerate(cmds) if c[-2:] == ["suite.asv_offline", CONF["html_dir"]]]
    summary = [i for i, c in enumerate(cmds) if c[-1] == "suite.asv_summary"]
    assert offline and summary and offline[0] < summary[0]


def test_make_asv_check_uses_the_project_venv_and_saves_nothing():
    cmds = _make_n("asv-check")
    (check,) = _asv(cmds, "check")
    (run,) = _asv(cmds, "run")
    assert "--python=same" in check and "--python=same" in run and "--quick" in run


def test_every_smoke_regex_selects_parameter_sets_and_every_class_is_smoked():
    (run,) = _asv(_make_n("asv-check"), "run")
    regexes = [run[i + 1] for i, arg in enumerate(run) if arg == "--bench"]
    names = selection_names()
    for regex in regexes:
        assert any(re.search(regex, n) for n in names), f"{regex} selects nothing"
    selected = [n for n in names if any(re.search(r, n) for r in regexes)]
    assert len(selected) <= len(names) // 5, "the smoke run is no longer quick"
    smoked = {n.split("(")[0].rsplit(".", 1)[0] for n in selected}
    assert smoked == set(CLASSES)


# --------------------------------------------------------------------------- asv itself


@pytest.mark.slow
def test_asv_check_passes_in_the_project_venv():
    (check,) = _asv(_make_n("asv-check"), "check")
    assert subprocess.run([sys.executable, "-m", "asv", *check], cwd=ROOT).returncode == 0


def test_asv_flags_a_two_percent_step_in_counts_and_ten_percent_elsewhere():
    thresholds = CONF["regressions_thresholds"]

    def threshold(name: str) -> float:  # asv takes the largest threshold whose regex matches
        return max(t for regex, t in thresholds.items() if re.match(regex, name))

    assert threshold("bench_counts.InstructionCount.track_instructions") == 0.02
    assert threshold("bench_backends.LayerRatio.track_ratio_vs_dense") == 0.1
