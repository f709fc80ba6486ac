import json
import os
import threading

import pytest

from suite.results import (
    InvalidRecordError,
    ResultStore,
    atomic_write_bytes,
    config_hash,
    make_record,
    validate_record,
)


def _bench_row(**kw):
    row = dict(
        backend="fused",
        in_features=768,
        out_features=3072,
        sparsity=0.9,
        batch=1,
        dtype="float32",
        threads=2,
        mode="kernel",
        median_s=1e-5,
        iqr_s=1e-7,
        dense_median_s=1e-4,
    )
    row.update(kw)
    return row


def test_make_record_fills_metadata_and_validates():
    rec = make_record("train", {"trainer": "srigl", "sparsity": 0.9}, {"top1_accuracy": 95.0})
    assert rec["schema_version"] == 1
    assert rec["run_id"] == config_hash({"sparsity": 0.9, "trainer": "srigl"})
    assert rec["host"]["cpu_count"] == os.cpu_count()
    assert rec["versions"]["torch"]


def test_train_records_carry_the_machine_identity_bench_records_carry_outside_the_run_id():
    # issue 22 item 4: a reproduction knows which machine class made the published records
    from suite import machine

    train = make_record("train", {"trainer": "srigl", "sparsity": 0.9}, {"top1_accuracy": 95.0})
    bench = make_record("bench", {"profile": {"name": "quick"}}, {"rows": [_bench_row()]})
    ident = machine.identity()
    keys = ("vendor", "family", "model", "stepping", "isa", "cores", "asv_name")
    for rec in (train, bench):
        assert {k: rec["host"][k] for k in keys} == {k: ident[k] for k in keys}
        assert machine.same_class(rec["host"], ident)
    assert train["run_id"] == config_hash({"sparsity": 0.9, "trainer": "srigl"})  # config only


def test_invalid_records_are_rejected_with_the_reason():
    with pytest.raises(InvalidRecordError, match="top1_accuracy"):
        make_record("train", _train_config(), {"top1_accuracy": 140.0})
    with pytest.raises(InvalidRecordError, match="kind"):
        make_record("eval", {}, {})
    with pytest.raises(InvalidRecordError, match="lacks keys"):
        make_record("bench", {}, {"rows": [{"backend": "x"}]})
    with pytest.raises(InvalidRecordError, match="mode"):
        make_record("bench", {}, {"rows": [_bench_row(mode="warm")]})
    rec = make_record("bench", {}, {"rows": [_bench_row()]})
    rec["schema_version"] = 99
    with pytest.raises(InvalidRecordError, match="schema_version"):
        validate_record(rec)


def test_store_round_trip_one_file_per_run(tmp_path):
    store = ResultStore(tmp_path / "runs")
    a = make_record("train", _train_config(1), {"top1_accuracy": 90.0})
    b = make_record("bench", {"seed": 1}, {"rows": [_bench_row()]})
    pa, pb = store.write(a), store.write(b)
    assert pa != pb and len(store) == 2
    assert [r["kind"] for r in store.read()] == ["bench", "train"]
    assert store.read("train")[0]["metrics"]["top1_accuracy"] == 90.0
    store.write(a)  # the same run again replaces its file
    assert len(store) == 2


def test_reader_reports_bad_files_instead_of_skipping_them(tmp_path):
    store = ResultStore(tmp_path)
    store.write(make_record("train", _train_config(1), {"top1_accuracy": 90.0}))
    (tmp_path / "train-broken.json").write_text('{"schema_version": 1, "kind": "tr')
    with pytest.raises(InvalidRecordError, match="train-broken.json"):
        store.read()
    records, errors = store.read_with_errors()
    assert len(records) == 1 and len(errors) == 1


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_parallel_writers_never_interleave(tmp_path):
    store = ResultStore(tmp_path)
    big = {"curve": list(range(20000))}

    def write(i):
        store.write(make_record("train", _train_config(i), {"top1_accuracy": 50.0, **big}))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.read()) == 8
    for p in store.files():
        json.loads(p.read_text())


def _train_config(seed=1, **kw):
    return {"trainer": {"name": "srigl", "label": "srigl"}, "seed": seed, **kw}


def test_two_files_of_one_run_with_different_metrics_are_refused_naming_both(tmp_path):
    # issue 23 item 3: the later-sorting file used to win silently
    store = ResultStore(tmp_path)
    first = store.write(make_record("train", _train_config(), {"top1_accuracy": 96.9}))
    other = make_record("train", _train_config(), {"top1_accuracy": 10.0})
    copy = tmp_path / f"z-copy-{first.name}"
    copy.write_text(json.dumps(other))
    with pytest.raises(InvalidRecordError, match="conflict") as err:
        store.read()
    message = str(err.value)
    assert first.name in message and copy.name in message and "\n" not in message
    records, errors = store.read_with_errors()
    assert records == []  # neither side is picked
    assert sorted(e.path.name for e in errors) == sorted([first.name, copy.name])
    other = {first.name: copy.name, copy.name: first.name}
    assert all(other[e.path.name] in e.error for e in errors)  # each names the other file


def test_identical_copies_of_one_run_are_no_conflict(tmp_path):
    store = ResultStore(tmp_path)
    path = store.write(make_record("train", _train_config(), {"top1_accuracy": 96.9}))
    (tmp_path / f"copy-{path.name}").write_bytes(path.read_bytes())
    records, errors = store.read_with_errors()
    assert errors == [] and len(records) == 2


def test_records_of_different_kinds_may_share_a_run_id(tmp_path):
    store = ResultStore(tmp_path)
    store.write(make_record("train", _train_config(), {"top1_accuracy": 90.0}, run_id="r1"))
    store.write(make_record("bench", {}, {"rows": [_bench_row()]}, run_id="r1"))
    assert len(store.read()) == 2


def test_a_train_record_without_config_trainer_is_invalid_naming_file_and_key(tmp_path):
    # issue 23 item 3: it passed validation, then every table dropped it while the header
    # counted it
    store = ResultStore(tmp_path)
    rec = make_record("train", _train_config(), {"top1_accuracy": 90.0})
    del rec["config"]["trainer"]
    path = tmp_path / "train-notrainer.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(InvalidRecordError, match=r"train-notrainer\.json.*config\.trainer"):
        store.read()
    with pytest.raises(InvalidRecordError, match="config.trainer"):
        make_record("train", {"seed": 1}, {"top1_accuracy": 90.0})


@pytest.mark.parametrize("trainer", [None, {}, {"ablation": True}, "", 3])
def test_config_trainer_must_name_a_method(trainer):
    with pytest.raises(InvalidRecordError, match="config.trainer"):
        make_record("train", {"trainer": trainer}, {"top1_accuracy": 90.0})


def test_git_info_dirty_ignores_what_the_suite_writes_under_results(tmp_path):
    import subprocess

    from suite.results import git_info

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "REPORT.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_info(tmp_path)["dirty"] is False
    (tmp_path / "results" / "REPORT.md").write_text("regenerated\n")
    assert git_info(tmp_path)["dirty"] is False  # a reproduction rewrote the report
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_info(tmp_path)["dirty"] is True
