"""The C++ extension loader: cached builds, concurrent builders, damaged or read-only caches,
clear reasons for failures (a full disk among them)."""

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


def _damage(lib: pathlib.Path, how: str) -> None:
    if how == "truncated":
        with open(lib, "r+b") as fh:
            fh.truncate(4096)
    else:
        lib.write_bytes(__import__("os").urandom(lib.stat().st_size))


def _run(code: str, cache: pathlib.Path, compiler: bool) -> subprocess.CompletedProcess:
    """``code`` in a fresh process (a SIGBUS kills that one, not pytest) on cache ``cache``."""
    path = __import__("os").environ["PATH"] if compiler else "/nonexistent"
    env = {"SRIGL_CACHE_DIR": str(cache), "PATH": path, "SRIGL_TUNE": "off"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@needs_compiler
@pytest.mark.parametrize("how", ["truncated", "random_bytes"])
def test_a_damaged_cached_library_is_never_loaded_and_is_built_again(tmp_path, how):
    cache = tmp_path / "cache"
    src = _source(tmp_path, PROBE)
    code = f"""
        import pathlib
        from backends.kernels.build import KernelUnavailableError, load_extension
        try:
            print(load_extension("srigl_probe_g", [pathlib.Path({str(src)!r})]).__file__)
        except KernelUnavailableError as err:
            print("unavailable:", err.reason)
        """
    first = _run(code, cache, compiler=True)  # built elsewhere: this process never maps it
    lib = pathlib.Path(first.stdout.strip())
    assert first.returncode == 0 and lib.is_file(), first.stderr[-2000:]
    _damage(lib, how)
    without = _run(code, cache, compiler=False)
    assert without.returncode == 0, without.stderr[-2000:]
    assert without.stdout.startswith("unavailable: no C++ compiler")
    assert f"{lib} is damaged" in without.stderr or f"{lib} does not load" in without.stderr
    rebuilt = _run(code, cache, compiler=True)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    fresh = pathlib.Path(rebuilt.stdout.strip())
    assert fresh.is_file() and fresh.parent != lib.parent and str(lib) in rebuilt.stderr
    again = _run(code, cache, compiler=False)  # later processes take the fresh build quietly
    assert again.stdout.strip() == str(fresh) and "damaged" not in again.stderr


@pytest.mark.parametrize("how", ["truncated", "random_bytes"])
def test_a_damaged_fused_library_without_a_compiler_falls_back_to_numba(tmp_path, how):
    from backends.kernels import ops

    if not ops.available()[0]:
        pytest.skip(ops.available()[1])
    built = next(
        pathlib.Path(m.__file__) for m in build._LOADED.values() if "srigl_fused_ext" in m.__file__
    )
    folder = tmp_path / "cache" / "kernels" / built.parent.name
    folder.mkdir(parents=True)
    lib = folder / built.name
    lib.write_bytes(built.read_bytes())
    (folder / "BUILD_OK").write_text(f"sha256={build.file_sha256(lib)}\n")
    _damage(lib, how)
    out = _run(
        "import backends; print(backends.available('fused', 'cpu'))",
        tmp_path / "cache",
        compiler=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(lib) in out.stderr
    pytest.importorskip("numba")
    assert out.stdout.startswith("(True, 'C++ kernel unavailable") and "numba" in out.stdout


@needs_compiler
def test_a_read_only_cache_with_a_valid_build_is_used_not_bypassed(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(cache))
    src = _source(tmp_path, PROBE)
    lib = pathlib.Path(load_extension("srigl_probe_h", [src]).__file__)
    # read-only, as root sees it too: every attempt to create a file in the cache fails
    code = f"""
        import pathlib, tempfile
        from backends.kernels.build import load_extension

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Read-only file system")

        tempfile.NamedTemporaryFile = tempfile.mkstemp = refuse
        print(load_extension("srigl_probe_h", [pathlib.Path({str(src)!r})]).__file__)
        """
    out = _run(code, cache, compiler=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(lib)


def test_a_build_that_runs_out_of_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    log = (
        "Error building extension 'srigl_probe_i': [3/3] c++ probe.o -o srigl_probe_i.so\n"
        "FAILED: srigl_probe_i.so\n/usr/bin/ld: final link failed: No space left on device\n"
        "collect2: error: ld returned 1 exit status\n"
    )

    def load(**kwargs):
        raise RuntimeError(log)

    monkeypatch.setattr(build, "kernel_available", lambda: (True, ""))
    monkeypatch.setattr(build, "import_cpp_extension", lambda: type("E", (), {"load": load}))
    with pytest.raises(KernelUnavailableError, match=r"the disk holding .* is full") as info:
        load_extension("srigl_probe_i", [_source(tmp_path, PROBE)])
    assert "ld returned 1" not in info.value.reason


def test_a_failed_build_on_a_nearly_full_disk_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(build.shutil, "disk_usage", lambda path: type("U", (), {"free": 1 << 20}))
    reason = build.disk_full_reason("error: ld returned 1", RuntimeError(), tmp_path)
    assert reason == f"the disk holding {tmp_path} is full (No space left on device; 1.0 MiB free)"
    monkeypatch.setattr(build.shutil, "disk_usage", lambda path: type("U", (), {"free": 1 << 40}))
    assert build.disk_full_reason("error: ld returned 1", RuntimeError(), tmp_path) is None


@needs_compiler
def test_a_library_without_its_build_marker_is_built_over_in_its_own_folder(tmp_path, monkeypatch):
    """A library with no BUILD_OK is a build in progress in another process (or one that died
    half-way): a second process waits for that folder's lock instead of building a copy
    into ``<name>-<key>.1`` (two processes building at once once loaded two libraries)."""
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    src = _source(tmp_path, PROBE)
    first = pathlib.Path(load_extension("srigl_probe_d", [src]).__file__)
    (first.parent / "BUILD_OK").unlink()
    assert (
        build._fresh_folder(
            first.parent.parent, "srigl_probe_d", first.parent.name.split("-", 1)[1]
        )
        == first.parent
    )


def test_the_projects_own_extensions_build_where_a_toolchain_is():
    """The kernel tests skip where the C++ kernels are unavailable; so that a compile error in
    the project's sources fails here instead of turning into skips, each extension must load
    wherever a compiler and ninja are found."""
    import os

    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"no C++ toolchain here: {why}")
    if os.environ.get("SRIGL_FUSED_KERNEL", "").lower() == "numba":
        pytest.skip("SRIGL_FUSED_KERNEL=numba asks for the numba kernel")
    from backends import dense_kernel, fused_conv
    from backends.kernels import ops

    assert ops.available() == (True, "")
    assert dense_kernel.EXTENSION.available() == (True, "")
    assert fused_conv._EXT.available() == (True, "")
    assert callable(ops.direct_linear())
