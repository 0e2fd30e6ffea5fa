"""The dashboard in real headless Chromium (Debian's package, driven by Playwright).

One browser for the module; each test gets its own context. The live tests start the real
CLI (`python -m experiments.dashboard ... --port 0`) as a subprocess on a free loopback port
and read its URL from stdout. A missing browser is a failure telling you what to run, never a
skip: the acceptance criteria of issue 8 are these tests.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.dashboard.browser import BrowserMissing, chromium

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "runs"
RUNS = ["arith-lenpen", "arith-nolenpen"]  # 10 and 9 iterations, every contract key present

# Traces per panel for the two fixture runs. Line panels overlay runs (series x runs);
# sampler: 7 difficulty levels + 1 filtered line per run; phases: 5 phases per run.
EXPECTED_TRACES = {"reward": 8, "length": 8, "kl": 4, "loss": 4, "throughput": 6,
                   "difficulty": 2, "sampler": 16, "phases": 10}

# Page-side predicates are written as arrow functions: Playwright eval()s plain expression
# strings, which the page's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
PANEL_STATE = """() => Object.fromEntries([...document.querySelectorAll('.plot')].map((d) => [
  d.id.replace('panel-', ''),
  {traces: (d.data || []).map((t) => ({type: t.type, name: t.name, x: Array.from(t.x || []),
                                      y: Array.from(t.y || []),
                                      z: t.z ? t.z.flat().filter((v) => v !== null).length : 0})),
   drawn: d.querySelectorAll('.scatterlayer .trace path.js-line, .barlayer .point, .heatmaplayer image').length,
   legend: [...d.querySelectorAll('.legendtext')].map((n) => n.textContent)}]))"""


@pytest.fixture(scope="module")
def browser():
    try:
        with chromium() as b:
            yield b
    except BrowserMissing as e:
        pytest.fail(f"{e} -- run experiments/install_browser.sh", pytrace=False)


def copy_runs(tmp_path: Path, names=RUNS) -> list[Path]:
    out = []
    for name in names:
        shutil.copytree(FIXTURE / name, tmp_path / name)
        out.append(tmp_path / name)
    return out


class Server:
    """`python -m experiments.dashboard` as a subprocess on a free loopback port."""

    def __init__(self, run_dirs: list[Path], *extra: str):
        cmd = [sys.executable, "-m", "experiments.dashboard", *map(str, run_dirs), "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if "http://" not in line:
            self.stop()
            raise AssertionError(f"server did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url  # loopback unless --host

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def open_page(browser, url: str, *, offline: bool = False, wait_sample: bool = True):
    """A page at `url`, ready (all panels drawn), with its console errors and requests collected.

    offline: the context has no network and every request that is not file:// is refused
    and recorded in `refused`, so a page that tried to fetch anything is caught.
    """
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, offline=offline)
    refused: list[str] = []
    if offline:
        def guard(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()
        context.route("**/*", guard)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    requests: list[str] = refused if offline else []
    if not offline:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30000)
    if wait_sample:
        page.wait_for_function("() => document.getElementById('rb-prompt').textContent !== ''", timeout=10000)
    return page, errors, requests


def metric(run: str, key: str) -> list:
    rows = [json.loads(line) for line in (FIXTURE / run / "metrics.jsonl").read_text().splitlines()]
    return [(r["iteration"], r[key]) for r in rows if key in r]


def check_full_page(page, errors: list[str], tmp_path: Path, shot: str) -> None:
    """The acceptance checks shared by the live page and the static file."""
    panels = page.evaluate(PANEL_STATE)
    assert {k: len(v["traces"]) for k, v in panels.items()} == EXPECTED_TRACES
    for name, panel in panels.items():
        for t in panel["traces"]:
            assert (len(t["x"]) > 0 and len(t["y"]) > 0) or t["z"] > 0, (name, t["name"])
        assert panel["drawn"] > 0, f"panel {name} has data but nothing was drawn"

    # Values, not just presence: the reward curve is the file's reward_mean, in iteration order.
    reward = {t["name"]: t for t in panels["reward"]["traces"]}
    want = metric("arith-lenpen", "reward_mean")
    got = reward["arith-lenpen · reward mean"]
    assert list(zip(got["x"], got["y"])) == want
    # eval keys exist only on eval iterations: the eval curve has just those points.
    assert reward["arith-nolenpen · pass@8 (eval)"]["x"] == [1, 4, 7]
    # Heatmap cells: 10 iterations x up to 7 levels, empty where a level was not sampled.
    assert panels["difficulty"]["traces"][0]["z"] == sum(
        len(v) for _, v in metric("arith-lenpen", "pass_rate_by_difficulty"))

    # Legend by run name: the runs table and every overlay panel's legend list each run.
    assert page.locator("#runs .run-name").all_text_contents() == RUNS
    for name in ("reward", "length", "kl", "loss", "throughput"):
        legend = panels[name]["legend"]
        for run in RUNS:
            assert any(text.startswith(run + " · ") for text in legend), (name, run, legend)
    assert "SFT 0.483" in page.locator("#runs tr[data-run='arith-lenpen']").inner_text()

    # Rollout browser: defaults to the latest iteration of the first run, first sample shown.
    samples = [json.loads(s) for s in (FIXTURE / "arith-lenpen" / "samples.jsonl").read_text().splitlines()]
    last = [s for s in samples if s["iteration"] == 10]
    assert page.locator("#rb-iter").input_value() == "10"
    assert page.locator("#rb-table tbody tr").count() == len(last) == 4
    assert page.text_content("#rb-prompt") == last[0]["prompt"]
    assert page.text_content("#rb-response") == last[0]["response"]
    assert last[0]["reason"] in page.text_content("#rb-meta")
    # Model text is shown verbatim and never executed.
    page.locator("#rb-table tbody tr").nth(1).click()
    assert page.text_content("#rb-response") == last[1]["response"]
    assert "</script><script>window.__xss=1</script>" in page.text_content("#rb-response")
    assert page.evaluate("window.__xss") is None
    # Another iteration of another run.
    page.select_option("#rb-run", "arith-nolenpen")
    page.select_option("#rb-iter", "3")
    first = next(s for s in (json.loads(x) for x in (FIXTURE / "arith-nolenpen" / "samples.jsonl")
                             .read_text().splitlines()) if s["iteration"] == 3)
    page.wait_for_function("(p) => document.getElementById('rb-prompt').textContent === p", arg=first["prompt"])

    path = tmp_path / shot
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 50_000
    assert errors == []


def test_live_page_renders_every_panel(browser, tmp_path):
    server = Server(copy_runs(tmp_path), "--refresh", "30")
    try:
        page, errors, requests = open_page(browser, server.url)
        check_full_page(page, errors, tmp_path, "live.png")
        assert all(r.startswith(server.url) for r in requests), requests  # no CDN, nothing external
        page.context.close()
    finally:
        server.stop()


def test_static_file_renders_offline(browser, tmp_path):
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "experiments.dashboard", *map(str, copy_runs(tmp_path)),
                    "--static", str(out)], cwd=REPO, check=True, capture_output=True)
    page, errors, refused = open_page(browser, out.as_uri(), offline=True)
    check_full_page(page, errors, tmp_path, "static.png")
    assert refused == []  # plotly is inlined; nothing was fetched
    assert "static snapshot" in page.text_content("#status")
    page.context.close()


def test_live_refresh_shows_appended_rows(browser, tmp_path):
    refresh = 0.5
    run, _ = copy_runs(tmp_path)
    server = Server([run, _], "--refresh", str(refresh))
    try:
        page, errors, _ = open_page(browser, server.url)
        reward_x = "document.getElementById('panel-reward').data[0].x"
        assert page.evaluate(reward_x)[-1] == 10

        # A half-written line (the trainer mid-write) is not shown and breaks nothing.
        new = {"iteration": 11, "reward_mean": 0.9123, "pass_rate": 0.9, "future_key": {"a": 1}}
        text = json.dumps(new) + "\n"
        with open(run / "metrics.jsonl", "a") as f:
            f.write(text[:25])
        polls = int(page.evaluate("document.body.dataset.polls || 0"))
        renders = int(page.evaluate("document.body.dataset.renders"))
        page.wait_for_function(f"() => Number(document.body.dataset.polls) >= {polls + 2}", timeout=5000)
        assert page.evaluate(reward_x)[-1] == 10
        # Nothing visible changed, so nothing was redrawn (a redraw would reset the reader's scroll).
        assert int(page.evaluate("document.body.dataset.renders")) == renders

        with open(run / "metrics.jsonl", "a") as f:
            f.write(text[25:])
        t0 = time.monotonic()
        page.wait_for_function(f"() => {reward_x}.includes(11)", timeout=4 * refresh * 1000 + 1000)
        assert time.monotonic() - t0 < 4 * refresh + 1
        assert page.evaluate("document.getElementById('panel-reward').data[0].y")[-1] == 0.9123
        assert page.locator("#runs tr[data-run='arith-lenpen'] td").nth(2).inner_text() == "11"

        # New samples: the rollout browser follows the latest iteration.
        sample = {"iteration": 11, "prompt_id": "arith-2-0042", "difficulty": 2, "prompt": "Compute 17+25",
                  "response": "<think>7+5=12, carry 1</think> \\boxed{42}", "reward": 1.1, "score": 1.0,
                  "reason": "correct", "length": 21, "length_reward": 0.1}
        with open(run / "samples.jsonl", "a") as f:
            f.write(json.dumps(sample) + "\n")
        page.wait_for_function("() => document.getElementById('rb-prompt').textContent === 'Compute 17+25'",
                               timeout=4 * refresh * 1000 + 1000)
        assert page.locator("#rb-iter").input_value() == "11"
        assert errors == []
        page.context.close()
    finally:
        server.stop()


def test_bad_input_still_renders_known_panels(browser, tmp_path):
    run = tmp_path / "messy-run"
    run.mkdir()
    rows = [{"iteration": i, "reward_mean": 0.1 * i, "entropy": 0.6 - 0.01 * i, "loss": float("nan") if i == 2 else 0.02,
             "brand_new_metric": [1, 2, 3], "nested": {"x": {"y": i}}} for i in range(1, 6)]
    lines = [json.dumps(r) for r in rows]  # json writes NaN for the diverged loss
    lines.insert(2, '{"iteration": 99, "reward_mean": ')  # a crash left a cut-off line mid-file
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 6, "reward_')  # still writing
    server = Server([run], "--refresh", "30")
    try:
        page, errors, _ = open_page(browser, server.url, wait_sample=False)
        panels = page.evaluate(PANEL_STATE)
        reward = panels["reward"]["traces"]
        assert [t["name"] for t in reward] == ["messy-run · reward mean"]
        assert reward[0]["x"] == [1, 2, 3, 4, 5]
        loss = {t["name"]: t for t in panels["loss"]["traces"]}["messy-run · loss"]
        assert loss["x"] == [1, 3, 4, 5]  # NaN is a gap, not a crash
        assert [len(panels[k]["traces"]) for k in ("length", "sampler", "difficulty")] == [0, 0, 0]
        assert page.text_content("#panel-sampler") == "no data for this panel yet"
        assert "skipped 1 unparseable line" in page.text_content("#runs")
        assert page.text_content("#rb-count") == "no samples.jsonl rows yet"
        assert errors == []
        page.context.close()
    finally:
        server.stop()


def test_chromium_missing_is_a_clear_failure(monkeypatch):
    import experiments.dashboard.browser as b

    monkeypatch.setattr(b, "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(BrowserMissing, match="install_browser.sh"):
        with b.chromium():
            pass


def test_length_distribution_panel_appears_for_runs_that_log_it(browser, tmp_path):
    """Long-CoT runs log length percentiles of correct and incorrect responses and the truncation
    rate per iteration (rl/rollout_stats.py length_metrics); the panel is drawn from them."""
    run, plain = copy_runs(tmp_path)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        it = r["iteration"]
        r.update(response_len_correct_p50=900 - 20 * it, response_len_correct_p90=2000 - 40 * it,
                 response_len_incorrect_p50=1200.0, response_len_incorrect_p90=2800.0,
                 truncated_frac=0.05 if it < 5 else 0.0)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "experiments.dashboard", str(run), str(plain), "--static", str(out)],
                   cwd=REPO, check=True, capture_output=True)
    page, errors, _ = open_page(browser, out.as_uri(), offline=True)
    panels = page.evaluate(PANEL_STATE)
    traces = {t["name"]: t for t in panels["lengthdist"]["traces"]}
    assert len(traces) == 5  # only the run that logs the keys
    assert traces["arith-lenpen · correct p50"]["y"] == [900 - 20 * r["iteration"] for r in rows]
    assert traces["arith-lenpen · truncated share"]["y"][:2] == [0.05, 0.05]
    assert panels["lengthdist"]["drawn"] > 0 and errors == []
    page.context.close()
