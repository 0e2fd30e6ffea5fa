"""Dashboard without a browser: reading runs that are still being written, the CLI's errors,
the static page's escaping, and the HTTP API (stdlib client against the real server)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from experiments.dashboard.cli import main
from experiments.dashboard.data import JsonlTail, RunSource, SamplesIndex, balanced_pick, open_runs, run_names
from experiments.dashboard.page import json_for_script, plotly_js, render_page
from experiments.dashboard.server import DashboardServer, static_boot

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "runs"


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------- incremental JSONL reading
def test_truncated_last_line_is_ignored_until_completed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "loss": 0.5}\n{"iteration": 2, "lo')
    tail = JsonlTail(path)
    tail.refresh()
    assert tail.rows == [{"iteration": 1, "loss": 0.5}]
    assert tail.pending is None and tail.bad_lines == 0  # mid-write is not an error
    append(path, 'ss": 0.4}\n')
    tail.refresh()
    assert [r["iteration"] for r in tail.rows] == [1, 2]
    assert tail.bad_lines == 0


def test_complete_line_without_newline_is_provisional_not_duplicated(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}')
    tail = JsonlTail(path)
    tail.refresh()
    assert tail.rows == [{"iteration": 1}] and tail.pending == {"iteration": 2}
    append(path, "\n")
    tail.refresh()
    assert tail.rows == [{"iteration": 1}, {"iteration": 2}] and tail.pending is None


def test_garbage_line_mid_file_is_skipped_and_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2, "rew\n[1, 2]\n\n{"iteration": 3}\n')
    tail = JsonlTail(path)
    tail.refresh()
    assert [r["iteration"] for r in tail.rows] == [1, 3]
    assert tail.bad_lines == 2  # the cut line and the non-object; blank lines are not errors


def test_only_appended_bytes_are_parsed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n')
    tail = JsonlTail(path)
    tail.refresh()
    gen, offset = tail.gen, tail.offset
    append(path, '{"iteration": 2}\n')
    tail.refresh()
    assert tail.gen == gen and tail.offset > offset and len(tail.rows) == 2


def test_rewritten_file_resets_generation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n')
    tail = JsonlTail(path)
    tail.refresh()
    gen = tail.gen
    path.write_text('{"iteration": 1, "restarted": true}\n')  # shorter: the run was restarted
    tail.refresh()
    assert tail.gen != gen and tail.rows == [{"iteration": 1, "restarted": True}]


def test_non_finite_floats_become_null_and_output_is_strict_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"iteration": 1, "loss": float("nan"), "kl": {"x": float("inf")}}) + "\n")
    tail = JsonlTail(path)
    tail.refresh()
    assert tail.rows == [{"iteration": 1, "loss": None, "kl": {"x": None}}]
    json.dumps(tail.rows, allow_nan=False)


def test_snapshot_cursor_returns_only_new_rows(tmp_path):
    run = tmp_path / "r"
    shutil.copytree(FIXTURE / "arith-nolenpen", run)
    src = RunSource(run, "r")
    first = src.snapshot()
    assert first["start"] == 0 and len(first["rows"]) == 9
    append(run / "metrics.jsonl", '{"iteration": 10, "reward_mean": 0.8, "some_new_key": [1]}\n')
    again = src.snapshot(first["gen"], 9)
    assert again["start"] == 9 and again["rows"] == [{"iteration": 10, "reward_mean": 0.8, "some_new_key": [1]}]
    stale = src.snapshot("another-generation", 9)
    assert stale["start"] == 0 and len(stale["rows"]) == 10  # unknown cursor: everything again


def test_side_files_and_warnings(tmp_path):
    run = tmp_path / "r"
    shutil.copytree(FIXTURE / "arith-lenpen", run)
    (run / "summary.json").write_text("{not json")
    snap = RunSource(run, "r").snapshot()
    assert snap["sft_eval"]["pass_at_1"] == 0.4833
    assert snap["summary"] is None
    assert any(w.startswith("summary.json: invalid JSON") for w in snap["warnings"])


# ---------------------------------------------------------------- samples
def test_samples_index_reads_one_iteration_from_offsets(tmp_path):
    index = SamplesIndex(FIXTURE / "arith-lenpen" / "samples.jsonl")
    index.refresh()
    assert index.counts() == {str(i): 4 for i in range(1, 11)}
    samples, total = index.read(10, limit=100, max_chars=10_000)
    lines = [json.loads(x) for x in (FIXTURE / "arith-lenpen" / "samples.jsonl").read_text().splitlines()]
    assert total == 4 and samples == [s for s in lines if s["iteration"] == 10]


def test_balanced_pick_alternates_and_keeps_file_order():
    entries = [(i, i + 1, ok) for i, ok in enumerate([True, True, True, True, False, True, False])]
    picked = balanced_pick(entries, 4)
    assert picked == [(0, 1, True), (1, 2, True), (4, 5, False), (6, 7, False)]
    assert balanced_pick(entries[:3], 4) == entries[:3]


def test_long_text_is_cut_and_marked(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"iteration": 1, "prompt": "p", "response": "x" * 500}) + "\n")
    index = SamplesIndex(path)
    index.refresh()
    (s,), _ = index.read(1, limit=8, max_chars=100)
    assert s["response"] == "x" * 100 and s["response_chars"] == 500 and "prompt_chars" not in s


# ---------------------------------------------------------------- run names and CLI errors
def test_run_names_add_parents_only_on_collision(tmp_path):
    a, b, c = tmp_path / "x" / "run", tmp_path / "y" / "run", tmp_path / "y" / "other"
    assert run_names([a, b, c]) == ["x/run", "y/run", "other"]
    assert run_names([c, c]) == ["other", "other (2)"]


def test_missing_run_dir_is_an_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    with pytest.raises(SystemExit) as exc:
        main([str(FIXTURE / "arith-lenpen"), str(missing), "--static", str(tmp_path / "x.html")])
    assert exc.value.code == 2
    assert f"run directory does not exist: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_file_instead_of_run_dir_is_an_error(tmp_path, capsys):
    with pytest.raises(NotADirectoryError, match="metrics.jsonl"):
        open_runs([FIXTURE / "arith-lenpen" / "metrics.jsonl"])
    with pytest.raises(SystemExit) as exc:
        main([str(FIXTURE / "arith-lenpen" / "metrics.jsonl")])
    assert exc.value.code == 2 and "not a run directory" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "experiments.dashboard", "--help"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--static" in out and "--screenshot" in out and "127.0.0.1" in out


# ---------------------------------------------------------------- the page
def test_json_for_script_cannot_close_the_script_element():
    text = json_for_script({"response": "</script><script>alert(1)</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"response": "</script><script>alert(1)</script><!-- & \u2028"}


def test_static_page_is_self_contained_and_escaped(tmp_path):
    out = tmp_path / "report.html"
    assert main([str(FIXTURE / "arith-lenpen"), str(FIXTURE / "arith-nolenpen"), "--static", str(out)]) == 0
    page = out.read_text()
    body = page.replace(plotly_js(), "")  # the library is inlined verbatim, once
    assert len(page) - len(body) == len(plotly_js())
    # Exactly our three scripts (library, data, app), none loaded from anywhere.
    assert len(re.findall(r"<script\b", body)) == 3 and not re.search(r"<script[^>]*\bsrc=", body)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", body)
    assert "connect-src &#x27;none&#x27;" in body  # the browser refuses any fetch from the file
    # Model text containing </script> stays inside the JSON block.
    assert "window.__xss" in body and "<script>window.__xss" not in body
    boot = json.loads(re.search(r'<script id="boot" type="application/json">(.*?)</script>', body, re.S).group(1))
    runs = boot["data"]["runs"]
    assert [r["name"] for r in runs] == ["arith-lenpen", "arith-nolenpen"]
    assert [len(r["rows"]) for r in runs] == [10, 9]
    assert sorted(map(int, runs[0]["samples"])) == list(range(1, 11))


def test_template_placeholders_in_run_data_stay_literal(tmp_path):
    run = tmp_path / "${app}"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"iteration": 1, "reward_mean": 0.5}\n')
    html, _ = render_page(static_boot(open_runs([run]), 4, 100), static=False)
    assert '"name":"${app}"' in html and html.count("use strict") == 1


# ---------------------------------------------------------------- the HTTP API
@pytest.fixture()
def server(tmp_path):
    run = tmp_path / "arith-lenpen"
    shutil.copytree(FIXTURE / "arith-lenpen", run)
    srv = DashboardServer("127.0.0.1", 0, open_runs([run]), refresh_s=1)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv, run
    srv.shutdown()
    srv.server_close()


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_api_data_and_samples(server):
    srv, run = server
    assert srv.server_address[0] == "127.0.0.1"
    status, _, body = get(srv.url + "api/data?cursor=%7B%7D")
    snap = json.loads(body)["runs"][0]
    assert status == 200 and snap["name"] == "arith-lenpen" and len(snap["rows"]) == 10
    cursor = json.dumps({"arith-lenpen": [snap["gen"], 10]})
    append(run / "metrics.jsonl", '{"iteration": 11, "reward_mean": 0.9}\n')
    _, _, body = get(srv.url + "api/data?cursor=" + urllib.request.quote(cursor))
    assert json.loads(body)["runs"][0]["rows"] == [{"iteration": 11, "reward_mean": 0.9}]

    status, _, body = get(srv.url + "api/samples?run=arith-lenpen&iteration=3&limit=2")
    got = json.loads(body)
    assert status == 200 and got["total"] == 4 and len(got["samples"]) == 2
    assert {s["iteration"] for s in got["samples"]} == {3}
    assert get(srv.url + "api/samples?run=../etc&iteration=1")[0] == 404
    assert get(srv.url + "api/samples?run=arith-lenpen&iteration=x")[0] == 400
    assert get(srv.url + "nope")[0] == 404


def test_page_and_library_are_served_locally(server):
    srv, _ = server
    status, headers, body = get(srv.url)
    assert status == 200 and b'<script src="plotly.min.js"></script>' in body
    assert "script-src 'self' 'nonce-" in headers["Content-Security-Policy"]
    status, headers, body = get(srv.url + "plotly.min.js", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body).decode() == plotly_js()


def test_foreign_host_header_is_refused_on_loopback(server):
    srv, _ = server
    status, _, body = get(srv.url, {"Host": "attacker.example:6070"})
    assert status == 403 and b"loopback" in body
    assert get(srv.url, {"Host": "localhost"})[0] == 200
