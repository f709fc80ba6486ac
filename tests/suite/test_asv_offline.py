"""suite.asv_offline: asv's site loads its JavaScript and CSS from the vendored copies.

The slow test publishes a real asv site from a tiny results folder, makes it offline, serves it
with ``python -m http.server`` and opens it in headless Chromium with network access off; it
checks that the benchmark graph rendered (flot's canvas, no "failed to load" page) and saves a
screenshot."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import asv
import pytest
from repo_fixtures import first_parent_shas

from suite import asv_offline

ASV_INDEX = Path(asv.__file__).parent / "www" / "index.html"
ROOT = Path(__file__).resolve().parents[2]


def test_every_cdn_file_asv_loads_is_vendored_with_a_license():
    html = ASV_INDEX.read_text(encoding="utf-8")
    urls = asv_offline.online_dependencies(html)
    assert urls and set(urls) == set(asv_offline.CDN_FILES)
    for local in asv_offline.CDN_FILES.values():
        path = asv_offline.VENDOR_DIR / local
        assert path.stat().st_size > 1000, local
        package = asv_offline.VENDOR_DIR / local.split("/")[0]
        assert [p for p in package.iterdir() if re.match(r"LICENSE|package\.json", p.name)]


def test_the_rewritten_page_loads_nothing_from_the_network():
    new = asv_offline.rewrite_index(ASV_INDEX.read_text(encoding="utf-8"))
    assert asv_offline.online_dependencies(new) == []
    assert 'src="vendor/jquery-3.3.1/jquery.min.js"' in new
    assert 'href="vendor/bootstrap-3.1.1/css/bootstrap.min.css"' in new
    assert "integrity=" not in new and "js_load_failure()" in new
    assert 'href="https://github.com/airspeed-velocity/asv/"' in new  # a link, not a load


def test_an_unknown_cdn_url_is_an_error_naming_it():
    html = '<script src="https://cdn.example.org/new.js"></script>'
    with pytest.raises(asv_offline.OfflineSiteError, match="cdn.example.org/new.js"):
        asv_offline.rewrite_index(html)


def test_make_offline_copies_the_vendor_folder_and_rewrites_index(tmp_path):
    shutil.copy(ASV_INDEX, tmp_path / "index.html")
    local = asv_offline.make_offline(tmp_path)
    assert len(local) == len(asv_offline.CDN_FILES)
    assert all((tmp_path / p).is_file() for p in local)
    assert asv_offline.online_dependencies((tmp_path / "index.html").read_text()) == []
    assert asv_offline.main([str(tmp_path / "missing")]) == 1


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, seconds: float = 30.0) -> None:
    """Return once something accepts connections on ``port`` (the http server is up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no http server on port {port} after {seconds} s")


def _publish_tiny_site(tmp_path: Path) -> Path:
    """asv publish of one benchmark with values at three commits of this repository."""
    shas = first_parent_shas(3)
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    results, html = tmp_path / "results", tmp_path / "html"
    conf.update(repo=str(ROOT), results_dir=str(results), html_dir=str(html), branches=["HEAD"])
    conf_path = tmp_path / "asv.conf.json"
    conf_path.write_text(json.dumps(conf))
    machine = results / "tiny-2c"
    machine.mkdir(parents=True)
    (machine / "machine.json").write_text(
        json.dumps(
            {
                "machine": "tiny-2c",
                "cpu": "test",
                "num_cpu": "2",
                "arch": "x86_64",
                "os": "Linux",
                "ram": "1GiB",
                "version": 1,
            }
        )
    )
    name = "bench_counts.InstructionCount.track_instructions"
    env = "virtualenv-py3.11"
    for i, sha in enumerate(reversed(shas)):
        data = {
            "commit_hash": sha,
            "env_name": env,
            "date": 1_700_000_000_000 + i * 60_000,
            "params": {"machine": "tiny-2c", "python": "3.11"},
            "python": "3.11",
            "requirements": {},
            "env_vars": {},
            "result_columns": ["result", "params", "version", "started_at", "duration"],
            "results": {name: [[1000 + 10 * i], [["'smoke'"]], "1", 0, 1.0]},
            "durations": {},
            "version": 2,
        }
        (machine / f"{sha[:8]}-{env}.json").write_text(json.dumps(data))
    bench = {
        name: {
            "code": "",
            "name": name,
            "param_names": ["case"],
            "params": [["'smoke'"]],
            "timeout": 60,
            "type": "track",
            "unit": "instructions",
            "version": "1",
        },
        "version": 2,
    }
    (results / "benchmarks.json").write_text(json.dumps(bench))
    subprocess.run(
        [sys.executable, "-m", "asv", "publish", "--config", str(conf_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert asv_offline.main([str(html)]) == 0
    return html


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_the_published_site_renders_its_graphs_offline_in_headless_chromium(tmp_path):
    html = _publish_tiny_site(tmp_path)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=html,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port)
        url = f"http://127.0.0.1:{port}/#bench_counts.InstructionCount.track_instructions"
        flags = [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--virtual-time-budget=15000",
            f"--user-data-dir={tmp_path / 'profile'}",
        ]
        dom = subprocess.run(
            [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180
        ).stdout
        subprocess.run(
            [*flags, f"--screenshot={tmp_path / 'site.png'}", "--window-size=1280,900", url],
            capture_output=True,
            timeout=180,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "dependencies of airspeed velocity failed to load" not in dom, "asv's error page"
    assert '<canvas class="flot-base"' in dom, dom[:2000]  # flot drew the benchmark graph
    # the screenshot (of the test's made-up values, so it stays out of results/) is kept in
    # pytest's tmp folder: <basetemp>/test_the_published_site_renders0/site.png
    assert (tmp_path / "site.png").stat().st_size > 10_000
