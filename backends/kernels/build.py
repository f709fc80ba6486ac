"""Build and load C++ kernel extensions with the system compiler, cached per machine.

:func:`load_extension` compiles sources with ``torch.utils.cpp_extension`` (system ``c++``,
``-O3``, OpenMP; per-ISA code goes in its own translation unit behind ``#pragma GCC target``
and is chosen at run time, so the build itself never uses ``-march=native``) into a folder
of the user cache directory keyed by a hash of the sources, torch and Python versions and the
flags. A later process imports the cached library without a compiler. Two
processes building at once serialise on an OS file lock (released if the holder dies); the
second one imports what the first built. Every failure is a :class:`KernelUnavailableError`
whose message says why (no compiler, first error line of a failed build, a full disk, an
unwritable cache).

A cached build is trusted only when its library's SHA-256 matches the one recorded in the
folder's ``BUILD_OK`` marker; a library that fails that check or fails to import (truncated,
overwritten) is never loaded as it is: a warning names the file and the extension is built
again into a fresh folder (without a compiler: :class:`KernelUnavailableError`, and callers
fall back as ``available()`` says). A read-only cache holding a valid build is used as it is.

Cache folder: ``$SRIGL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/srigl-bench`` or
``~/.cache/srigl-bench``; ``kernels/<name>-<hash>/`` below it.

A source list is compiled into one Python module named ``name`` (a tiny module-init file is
added, so sources need no pybind11); operators the sources register with ``TORCH_LIBRARY``
appear under ``torch.ops.<namespace>``. Each ``TORCH_LIBRARY`` namespace may be defined by one
extension only (use your own namespace, or ``TORCH_LIBRARY_FRAGMENT``).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.util
import logging
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

BASE_CFLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-Wno-unknown-pragmas"]
BASE_LDFLAGS = ["-fopenmp"]
_PYMODULE_SOURCE = pathlib.Path(__file__).with_name("csrc") / "pymodule.cpp"
_HEADER_SUFFIXES = (".h", ".hpp", ".hh", ".cuh", ".inc")
_LOADED: dict[str, types.ModuleType] = {}
_LOCK = threading.Lock()


class KernelUnavailableError(RuntimeError):
    """A C++ kernel extension cannot be built or loaded here; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KernelCacheWarning(UserWarning):
    """A cached kernel library is damaged or does not load; it is built again elsewhere."""


def cache_dir() -> pathlib.Path:
    """The per-user cache folder of srigl-bench (kernels, tuner results); not created here."""
    env = os.environ.get("SRIGL_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "srigl-bench"


def _compiler() -> str | None:
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or shutil.which("g++") or shutil.which("clang++")


@functools.cache
def _compiler_version(cxx: str) -> str:
    try:
        res = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown ({err})"
    return (res.stdout.splitlines() or ["unknown"])[0]


def _ninja_on_path() -> bool:
    """Put the ninja of the ``ninja`` pip package (or of this Python's bin folder) on PATH when
    PATH has none (a venv's python run without activating the venv)."""
    if shutil.which("ninja"):
        return True
    folders = [pathlib.Path(sys.executable).parent]
    try:
        import ninja  # the pip package

        folders.insert(0, pathlib.Path(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    for folder in folders:
        if (folder / "ninja").is_file():
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return True
    return False


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_cpp_extension():
    """``torch.utils.cpp_extension``, imported without its import-time "No CUDA runtime is
    found" warning (these kernels are CPU code; the warning would follow every first use)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def kernel_available() -> tuple[bool, str]:
    """Whether C++ kernels can be built here: ``(True, "")`` or ``(False, why)``.

    Checks for a C++ compiler (``$CXX``, ``c++``, ``g++`` or ``clang++``) and ninja. A kernel
    that was built before and is cached loads even where this says False.
    """
    if _compiler() is None:
        return False, "no C++ compiler found (set $CXX or install g++)"
    if not (_ninja_on_path() and import_cpp_extension().is_ninja_available()):
        return False, "ninja is not installed (pip install ninja, or apt-get install ninja-build)"
    return True, ""


def build_key(name: str, sources: list[pathlib.Path], extra_cflags: list[str]) -> str:
    """A hash of what changes the built library: sources (name and bytes), flags, torch,
    Python and platform. The compiler is left out, so a machine without one still finds a
    build cached there (the compiler that made it is recorded in the folder's BUILD_OK)."""
    h = hashlib.sha256()
    for src in sorted(sources, key=lambda p: p.name):
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    parts = [name, *BASE_CFLAGS, *extra_cflags, torch.__version__]
    parts += [sys.version, platform.machine(), platform.system()]
    h.update("\0".join(parts).encode())
    return h.hexdigest()[:16]


def source_digest(sources: list[pathlib.Path]) -> str:
    """A short hash of kernel sources (names and bytes): what a tuning result of those kernels
    depends on besides the machine (a changed kernel is timed again)."""
    h = hashlib.sha256()
    for src in sorted(sources, key=lambda p: p.name):
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _library_path(folder: pathlib.Path, name: str) -> pathlib.Path:
    return folder / f"{name}.so"


def _import(name: str, path: pathlib.Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise KernelUnavailableError(f"cannot import the built kernel library {path}")
    try:
        module = importlib.util.module_from_spec(spec)  # dlopen happens here
        spec.loader.exec_module(module)
    except (ImportError, OSError, RuntimeError) as err:
        raise KernelUnavailableError(f"cannot load {path}: {err}") from err
    return module


def file_sha256(path: pathlib.Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _recorded_sha256(done: pathlib.Path) -> str | None:
    try:
        for line in done.read_text().splitlines():
            if line.startswith("sha256="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


def verified_library(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    """The folder's library if its SHA-256 matches the one its ``BUILD_OK`` records, else None
    (no build there, an unfinished build, or a damaged library)."""
    lib, done = _library_path(folder, name), folder / "BUILD_OK"
    if not (lib.is_file() and done.is_file()):
        return None
    want = _recorded_sha256(done)
    try:
        return lib if want is not None and file_sha256(lib) == want else None
    except OSError:
        return None


def first_error_line(output: str) -> str:
    """The first compiler/linker error line of a build log (or its last non-empty line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for pattern in (r"(^|: )(fatal )?error: ", r"\berror\b"):
        for ln in lines:
            if re.search(pattern, ln) and not ln.startswith(("FAILED", "Error building")):
                return ln
    return lines[-1] if lines else "(no output)"


def _fallback_root() -> pathlib.Path:
    return pathlib.Path(tempfile.gettempdir()) / f"srigl-bench-{os.getuid()}" / "kernels"


def _build_folders(name: str, key: str) -> list[pathlib.Path]:
    """The folders that may hold a build of ``name`` with ``key``: ``<name>-<key>`` and its
    rebuilds ``<name>-<key>.<n>`` in the cache, then in the temporary fallback cache."""
    found = []
    for root in (cache_dir() / "kernels", _fallback_root()):
        try:
            found += sorted(root.glob(f"{name}-{key}*"), key=lambda p: (len(p.name), p.name))
        except OSError:
            continue
    return [f for f in found if f.name == f"{name}-{key}" or f.name.startswith(f"{name}-{key}.")]


def _fresh_folder(root: pathlib.Path, name: str, key: str) -> pathlib.Path:
    """The first of ``<name>-<key>``, ``<name>-<key>.1``, ... under ``root`` that holds no
    finished build: no library, or a library without its ``BUILD_OK`` (a build in progress in
    another process, whose lock :func:`_build` then waits for, or one that died half-way).
    A finished build that is damaged or unverifiable is left where it is: a process may have
    it mapped."""
    n = 0
    while True:
        folder = root / (f"{name}-{key}" if n == 0 else f"{name}-{key}.{n}")
        if not _library_path(folder, name).exists() or not (folder / "BUILD_OK").exists():
            return folder
        n += 1


def _writable_root() -> pathlib.Path:
    root = cache_dir() / "kernels"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, delete=True)
        probe.close()
        return root
    except OSError as err:
        fallback = _fallback_root()
        log.warning("kernel cache %s is not writable (%s); using %s", root, err, fallback)
        try:
            fallback.mkdir(parents=True, exist_ok=True)
        except OSError as err2:
            raise KernelUnavailableError(
                f"no writable cache folder for kernels: {root} ({err}), {fallback} ({err2}); "
                "set $SRIGL_CACHE_DIR"
            ) from err2
        return fallback


def load_extension(
    name: str, sources: list[pathlib.Path], extra_cflags: list[str] | None = None
) -> types.ModuleType:
    """Build (once per machine, cached) and import the C++ extension ``name``.

    Args:
        name: a Python identifier, the module name (also ``TORCH_EXTENSION_NAME`` in C++).
        sources: C++ source files (``.cpp``) and the headers they include (``.h``/``.hpp``:
            hashed into the cache key, not compiled); each file's folder is on the include
            path. List your headers, so that editing one rebuilds.
        extra_cflags: flags added to :data:`BASE_CFLAGS` (``-O3 -fopenmp ...``).

    Returns:
        The imported module; operators registered with ``TORCH_LIBRARY`` are in ``torch.ops``.

    Raises:
        KernelUnavailableError: no compiler or ninja and nothing cached, the build failed
            (the message holds the first error line), or no cache folder is writable.
    """
    if not name.isidentifier():
        raise ValueError(f"extension name must be a Python identifier, got {name!r}")
    sources = [pathlib.Path(s).resolve() for s in sources]
    for src in sources:
        if not src.is_file():
            raise KernelUnavailableError(f"kernel source {src} does not exist")
    flags = list(extra_cflags or [])
    all_sources = [*sources, _PYMODULE_SOURCE]
    key = build_key(name, all_sources, flags)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_or_build(name, key, all_sources, flags)
        return _LOADED[key]


def _load_or_build(
    name: str, key: str, sources: list[pathlib.Path], flags: list[str]
) -> types.ModuleType:
    """Import a verified cached build of ``name`` (a read-only cache is fine), else build one
    into a fresh folder; a damaged cached library is named in a warning, never loaded."""
    damaged = []
    for folder in _build_folders(name, key):
        lib = _library_path(folder, name)
        if verified_library(folder, name) is not None:
            try:
                return _import(name, lib)
            except KernelUnavailableError as err:
                damaged.append(f"{lib} does not load ({err.reason})")
        elif lib.exists() and _recorded_sha256(folder / "BUILD_OK") is not None:
            damaged.append(f"{lib} is damaged: its SHA-256 does not match the one in BUILD_OK")
        # (a BUILD_OK without a hash: a build from before hashes were recorded, built again)
    for why in damaged:
        warnings.warn(f"{why}; building it again", KernelCacheWarning, stacklevel=4)
    folder = _fresh_folder(_writable_root(), name, key)
    lib = _library_path(folder, name)
    _build(name, sources, flags, folder, lib, folder / "BUILD_OK")
    return _import(name, lib)


def _build(
    name: str,
    sources: list[pathlib.Path],
    flags: list[str],
    folder: pathlib.Path,
    lib: pathlib.Path,
    done: pathlib.Path,
) -> None:
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / "build.lock")):
        if verified_library(folder, name):  # another process built it while we waited
            return
        ok, why = kernel_available()
        if not ok:
            raise KernelUnavailableError(why)
        cpp_extension = import_cpp_extension()
        include_dirs = sorted({str(s.parent) for s in sources})
        log.info("building C++ kernel extension %r in %s (once per machine)", name, folder)
        # torch renames a second build of one name in a process to name_v1; each of our
        # folders holds one build, so keep the plain name (the module-init symbol uses it).
        versioner = getattr(cpp_extension, "JIT_EXTENSION_VERSIONER", None)
        getattr(versioner, "entries", {}).pop(name, None)
        compiled = [str(s) for s in sources if s.suffix not in _HEADER_SUFFIXES]
        try:
            cpp_extension.load(
                name=name,
                sources=compiled,
                extra_cflags=[*BASE_CFLAGS, *flags],
                extra_ldflags=BASE_LDFLAGS,
                extra_include_paths=include_dirs,
                build_directory=str(folder),
                is_python_module=False,
                is_standalone=False,
                verbose=False,
            )
        except (RuntimeError, subprocess.CalledProcessError, OSError) as err:
            detail = getattr(err, "output", None) or str(err)
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            why = disk_full_reason(detail, err, folder) or first_error_line(detail)
            raise KernelUnavailableError(
                f"building {name!r} failed: {why} (log in {folder})"
            ) from err
        if not lib.is_file():
            raise KernelUnavailableError(f"building {name!r} produced no {lib}")
        try:
            done.write_text(key_summary(name, flags) + f"sha256={file_sha256(lib)}\n")
        except OSError as err:
            why = disk_full_reason(str(err), err, folder) or str(err)
            raise KernelUnavailableError(f"building {name!r} failed: {why}") from err


#: free bytes below which a failed build is put down to a full disk
LOW_DISK_BYTES = 64 << 20


def disk_full_reason(output: str, err: BaseException, folder: pathlib.Path) -> str | None:
    """ "the disk holding <folder> is full (...)" when a failed build ran out of space (ENOSPC,
    "No space left on device" in its output, or under :data:`LOW_DISK_BYTES` free); else None."""
    full = getattr(err, "errno", None) == errno.ENOSPC or "no space left on device" in (
        output.lower()
    )
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if not full and (free is None or free >= LOW_DISK_BYTES):
        return None
    left = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
    return f"the disk holding {folder} is full (No space left on device; {left})"


def key_summary(name: str, flags: list[str]) -> str:
    """What a cached build was made with (written next to it, for people)."""
    cxx = _compiler() or "none"
    return (
        f"name={name}\ntorch={torch.__version__}\npython={sys.version.split()[0]}\n"
        f"compiler={_compiler_version(cxx)}\nflags={' '.join(BASE_CFLAGS + flags)}\n"
    )


class Extension:
    """One C++ extension of torch operators: built on first use (cached per machine, see
    :func:`load_extension`), then ``setup(ops)`` (fake kernels, self-checks); the outcome, its
    ``torch.ops`` namespace or why it cannot load, is remembered for the process.

    Args:
        name: the extension's build name. sources: its ``.cpp`` (and ``.h``) files.
        namespace: the ``TORCH_LIBRARY`` namespace it registers (``torch.ops.<namespace>``).
        setup: called once with the namespace after the import; may raise
            :class:`KernelUnavailableError` (e.g. a failed self-check).
        label: what the operators are, for the reason of a failure (``"the direct conv
            kernel"``: "the direct conv kernel is unavailable: <why>"; empty: the bare why).
    """

    def __init__(
        self,
        name: str,
        sources: list[pathlib.Path],
        namespace: str,
        setup: Callable[[Any], None] | None = None,
        label: str = "",
    ) -> None:
        self.name, self.sources, self.namespace, self.setup = name, sources, namespace, setup
        self.label = label
        self.ops: Any = None  # the loaded namespace (None until load() succeeded)
        self.module: types.ModuleType | None = None  # the extension's Python module
        self.error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        """``torch.ops.<namespace>``, built and set up on the first call.

        Raises:
            KernelUnavailableError: no compiler, a failed build (first error line) or setup.
        """
        with self._lock:
            if self.ops is not None:
                return self.ops
            if self.error is not None:
                raise KernelUnavailableError(self.error)
            try:
                module = load_extension(self.name, self.sources)
                ops = getattr(torch.ops, self.namespace)
                if self.setup is not None:
                    self.setup(ops)
            except KernelUnavailableError as err:
                why = err.reason
                self.error = f"{self.label} is unavailable: {why}" if self.label else why
                log.warning("C++ extension %s unavailable: %s", self.name, err.reason)
                raise KernelUnavailableError(self.error) from None
            self.ops, self.module = ops, module
            return ops

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` if the operators load here (building them if need be), else
        ``(False, why)``."""
        try:
            self.load()
        except KernelUnavailableError as err:
            return False, err.reason
        return True, ""
