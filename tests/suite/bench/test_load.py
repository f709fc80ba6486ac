"""The bench's background load: busy processes run during the block and are gone after it."""

from __future__ import annotations

import pytest

from suite.bench.load import LoadError, check_load, cpu_load


def test_load_processes_run_inside_the_block_and_stop_after_it_even_on_error():
    with pytest.raises(RuntimeError, match="boom"):
        with cpu_load(2) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            raise RuntimeError("boom")
    assert all(p.poll() is not None for p in procs)


def test_no_load_starts_nothing():
    with cpu_load(0) as procs:
        assert procs == []


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, 65])
def test_a_bad_load_is_a_one_line_error_naming_it(bad):
    with pytest.raises(LoadError, match=f"load={bad!r} is invalid"):
        check_load(bad)
