"""The C++ extension loader: cached builds, concurrent builders, clear reasons for failures."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

from backends.kernels import build
from backends.kernels.build import KernelUnavailableError, kernel_available, load_extension

needs_compiler = pytest.mark.skipif(not kernel_available()[0], reason=kernel_available()[1])

PROBE = 'extern "C" int srigl_probe_add(int a, int b) { return a + b; }\n'


def _source(tmp_path: pathlib.Path, text: str, name: str = "probe.cpp") -> pathlib.Path:
    src = tmp_path / name
    src.write_text(text)
    return src


@needs_compiler
def test_load_extension_builds_once_then_imports_the_cached_library(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    src = _source(tmp_path, PROBE)
    module = load_extension("srigl_probe_a", [src])
    lib = pathlib.Path(module.__file__)
    assert lib.is_file() and lib.is_relative_to(tmp_path / "cache" / "kernels")
    # a new process with no compiler at all imports the cached build
    code = textwrap.dedent(
        f"""
        import pathlib
        from backends.kernels import build
        build._compiler = lambda: None
        m = build.load_extension("srigl_probe_a", [pathlib.Path({str(src)!r})])
        print(m.__file__)
        """
    )
    env = {"SRIGL_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/nonexistent"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == str(lib)


@needs_compiler
def test_changed_source_builds_into_a_new_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    first = load_extension("srigl_probe_b", [_source(tmp_path, PROBE)])
    second = load_extension("srigl_probe_b", [_source(tmp_path, PROBE + "// changed\n")])
    assert pathlib.Path(first.__file__).parent != pathlib.Path(second.__file__).parent


@needs_compiler
def test_two_processes_building_at_once_both_load_one_library(tmp_path):
    src = _source(tmp_path, PROBE)
    code = (
        "import pathlib; from backends.kernels.build import load_extension; "
        f"print(load_extension('srigl_probe_c', [pathlib.Path({str(src)!r})]).__file__)"
    )
    env = {"SRIGL_CACHE_DIR": str(tmp_path / "cache"), "PATH": __import__("os").environ["PATH"]}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and pathlib.Path(outs[0]).is_file()


@needs_compiler
def test_failed_build_reports_the_first_compiler_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    src = _source(tmp_path, "int f( { return 1; }\n", "broken.cpp")
    with pytest.raises(KernelUnavailableError, match=r"broken\.cpp:1:\d+: error: ") as info:
        load_extension("srigl_probe_d", [src])
    assert "srigl_probe_d" in info.value.reason


def test_no_compiler_is_a_clear_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_compiler", lambda: None)
    assert kernel_available() == (False, "no C++ compiler found (set $CXX or install g++)")
    with pytest.raises(KernelUnavailableError, match="no C\\+\\+ compiler"):
        load_extension("srigl_probe_e", [_source(tmp_path, PROBE)])


def test_missing_source_and_bad_name_are_rejected(tmp_path):
    with pytest.raises(KernelUnavailableError, match="does not exist"):
        load_extension("srigl_probe_f", [tmp_path / "nope.cpp"])
    with pytest.raises(ValueError, match="identifier"):
        load_extension("not-an-identifier", [])


def test_first_error_line_skips_ninja_noise():
    log = "Error building extension 'x': [1/2] c++ ...\nFAILED: a.o\na.cpp:3:1: error: boom\n"
    assert build.first_error_line(log) == "a.cpp:3:1: error: boom"
