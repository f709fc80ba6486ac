"""The store reader's refusals as the report sees them (``python -m suite.report``): a
conflict between two files of one run stops the report naming both, and ``--allow-invalid``
leaves both out with a warning instead of picking one."""

from __future__ import annotations

import json
import logging

import pytest

from suite.report.app import InvalidStoreError, load_store
from suite.results import ResultStore, make_record


def _conflicting_store(tmp_path):
    store = ResultStore(tmp_path)
    config = {"trainer": {"name": "srigl"}, "seed": 0, "experiment": "digits_mlp"}
    path = store.write(make_record("train", config, {"top1_accuracy": 96.89}))
    copy = tmp_path / f"x-{path.name}"
    copy.write_text(json.dumps(make_record("train", config, {"top1_accuracy": 79.56})))
    store.write(make_record("train", {**config, "seed": 1}, {"top1_accuracy": 96.0}))
    return path, copy


def test_the_report_refuses_conflicting_records_naming_both_files(tmp_path):
    path, copy = _conflicting_store(tmp_path)
    with pytest.raises(InvalidStoreError, match="--allow-invalid") as err:
        load_store(tmp_path)
    assert path.name in str(err.value) and copy.name in str(err.value)


def test_allow_invalid_leaves_both_conflicting_records_out_with_a_warning(tmp_path, caplog):
    path, copy = _conflicting_store(tmp_path)
    with caplog.at_level(logging.WARNING):
        records, invalid = load_store(tmp_path, allow_invalid=True)
    assert [r["config"]["seed"] for r in records] == [1]
    assert sorted(e.path.name for e in invalid) == sorted([path.name, copy.name])
    assert "conflicts with" in caplog.text
