// The dashboard page's script. experiments/dashboard/page.py inlines it into the page, filling in
// the CORRECT_THRESHOLD placeholder below from rl.rewards.scores (the one definition of correct).
// It builds every panel from the boot JSON, then, when live, polls `api/data` for appended
// metric rows and `api/samples` for the rollout browser.
//
// Conventions: run data only ever reaches the DOM through `textContent` (see `el`); colours are
// per run and consistent across panels; metrics are distinguished by dash style; a repeated
// iteration (a run resumed from a checkpoint) is plotted once, with its last-written values.
(function () {
'use strict';
const CORRECT_THRESHOLD = __CORRECT_THRESHOLD__;  // rl.rewards.scores: the one definition of correct
const boot = JSON.parse(document.getElementById('boot').textContent);
const RUN_COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e',
                    '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];
const PHASES = [['time_rollout_s', 'rollout', '#4c78a8'], ['time_verify_s', 'verify', '#f58518'],
                ['time_learn_s', 'learn', '#54a24b'], ['time_sync_s', 'weight sync', '#b279a2'],
                ['time_eval_s', 'eval', '#9d755d']];
const CONFIG = {displaylogo: false, responsive: true};
const state = {runs: new Map(), xmode: 'iteration', diffSource: 'pass_rate_by_difficulty',
               renders: 0, polls: 0, sampleCache: new Map(),
               rb: {run: null, iter: null, follow: true, filter: 'all', selected: 0, shown: []}};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'style') node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const fmt = (v, d) => isNum(v) ? (Number.isInteger(v) ? String(v) : v.toFixed(d ?? 4)) : '–';

// ---------------------------------------------------------------- data
// Returns whether anything visible changed, so an idle poll does not redraw (which would reset
// the reader's scroll position in a long response).
function ingest(payload) {
  let changed = false;
  payload.runs.forEach((r) => {
    const sig = JSON.stringify([r.tail, r.sample_counts, r.warnings, r.summary, r.sft_eval]);
    let run = state.runs.get(r.name);
    if (!run) {
      run = {name: r.name, color: RUN_COLORS[state.runs.size % RUN_COLORS.length], rows: [], gen: null};
      state.runs.set(r.name, run);
    }
    if (r.start === 0) run.rows = r.rows.slice();
    else if (r.gen === run.gen && r.start === run.rows.length) run.rows.push(...r.rows);
    else { run.gen = null; return; }  // out of step: the next poll asks for everything
    if (r.start === 0 || r.rows.length || sig !== run.sig) changed = true;
    run.sig = sig;
    Object.assign(run, {gen: r.gen, path: r.path, tail: r.tail, sampleCounts: r.sample_counts,
                        summary: r.summary, sftEval: r.sft_eval, warnings: r.warnings});
    if (r.samples) run.samples = r.samples;  // static snapshot: samples are embedded
    run.points = points(run);
  });
  return changed;
}

// Rows in iteration order; a repeated iteration keeps its last row; a missing one counts on.
function points(run) {
  const rows = run.tail ? run.rows.concat([run.tail]) : run.rows;
  const byIter = new Map();
  let prev = 0;
  for (const row of rows) {
    const it = isNum(row.iteration) ? row.iteration : prev + 1;
    prev = it;
    byIter.set(it, Object.assign({}, row, {iteration: it}));
  }
  return [...byIter.values()].sort((a, b) => a.iteration - b.iteration);
}

function xOf(row) {
  if (state.xmode === 'wall') return isNum(row.wall_s) ? row.wall_s / 3600 : null;
  return row.iteration;
}
const xTitle = () => state.xmode === 'wall' ? 'wall clock (hours)' : 'iteration';

function series(run, get) {
  const x = [], y = [], rows = [];
  for (const row of run.points) {
    const xv = xOf(row), yv = typeof get === 'function' ? get(row) : row[get];
    if (isNum(xv) && isNum(yv)) { x.push(xv); y.push(yv); rows.push(row); }
  }
  return {x, y, rows};
}

function lastValue(run, key) {
  for (let i = run.points.length - 1; i >= 0; i--) if (isNum(run.points[i][key])) return run.points[i][key];
  return null;
}
function firstValue(run, key) {
  for (const row of run.points) if (isNum(row[key])) return row[key];
  return null;
}

// Difficulty labels sort numerically when they are numbers (levels), else by name.
function sortLabels(labels) {
  return [...labels].sort((a, b) => {
    const na = Number(a), nb = Number(b), fa = a !== '' && Number.isFinite(na), fb = b !== '' && Number.isFinite(nb);
    if (fa && fb) return na - nb;
    if (fa !== fb) return fa ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  });
}
function labelsOf(runs, key) {
  const set = new Set();
  for (const run of runs) for (const row of run.points) {
    const d = row[key];
    if (d && typeof d === 'object' && !Array.isArray(d)) Object.keys(d).forEach((k) => set.add(k));
  }
  return sortLabels(set);
}

// The length-penalty term of the reward, w * mean len_reward (the caller adds it to r_j).
function lengthTerm(row) {
  return isNum(row.length_reward_mean) && isNum(row.length_penalty_weight)
    ? row.length_penalty_weight * row.length_reward_mean : null;
}
// Its share of the reward's magnitude: |term| / (|reward - term| + |term|), in [0, 1].
function lengthShare(row) {
  const t = lengthTerm(row);
  if (!isNum(t) || !isNum(row.reward_mean)) return null;
  const denom = Math.abs(row.reward_mean - t) + Math.abs(t);
  return denom > 0 ? Math.abs(t) / denom : null;
}

// ---------------------------------------------------------------- panels
const LINE_PANELS = [
  {id: 'reward', y: 'reward / pass rate', series: [
    {get: 'reward_mean', label: 'reward mean'},
    {get: 'pass_rate', label: 'pass rate (train)', dash: 'dot'},
    {get: 'eval_pass_at_1', label: 'pass@1 (eval)', dash: 'dash', markers: true},
    {get: 'eval_pass_at_k', label: (run) => 'pass@' + (lastValue(run, 'eval_k') ?? 'k') + ' (eval)',
     dash: 'dashdot', markers: true}]},
  {id: 'length', y: 'tokens', y2: 'reward units', series: [
    {get: 'response_len_mean', label: 'length: all'},
    {get: 'response_len_correct_mean', label: 'length: correct', dash: 'dot'},
    {get: 'response_len_incorrect_mean', label: 'length: incorrect', dash: 'dash'},
    {get: lengthTerm, label: 'length-penalty term of reward', dash: 'longdashdot', y2: true,
     custom: lengthShare,
     hover: '%{y:.4f} (w × length reward)<br>share of |reward|: %{customdata:.1%}'}]},
  {id: 'kl', y: 'KL', y2: 'entropy', series: [
    {get: 'kl_to_ref', label: 'KL to ref'}, {get: 'entropy', label: 'entropy', dash: 'dot', y2: true}]},
  {id: 'loss', y: 'loss', y2: 'grad norm', series: [
    {get: 'loss', label: 'loss'}, {get: 'grad_norm', label: 'grad norm', dash: 'dot', y2: true}]},
  {id: 'throughput', y: 'tokens / s', y2: 'seconds', series: [
    {get: 'rollout_tokens_per_s', label: 'rollout tokens/s'},
    {get: 'learner_tokens_per_s', label: 'learner tokens/s', dash: 'dot'},
    {get: 'weight_sync_s', label: 'weight sync (s)', dash: 'dash', y2: true}]},
];
// Panels drawn only for runs that log their metrics, placed before the named panel.
// MoE policies (rl/moe_metrics.py): expert load balance.
const MOE_PANEL = {id: 'moe', title: 'MoE router: expert load balance', key: 'moe_load_max', before: 'throughput',
  y: 'max expert load (1 = balanced)', y2: 'load CV', series: [
  {get: 'moe_load_max', label: 'max load: E x top share'},
  {get: 'moe_load_cv', label: 'coefficient of variation', dash: 'dot', y2: true}]};
// Length distribution per iteration (rl/rollout_stats.py length_metrics): long-CoT runs.
const LENGTH_DIST_PANEL = {id: 'lengthdist', title: 'Length distribution: correct vs incorrect, truncation',
  key: 'response_len_correct_p50', before: 'kl', y: 'tokens', y2: 'share cut at max_tokens', series: [
  {get: 'response_len_correct_p50', label: 'correct p50'},
  {get: 'response_len_correct_p90', label: 'correct p90', dash: 'dot'},
  {get: 'response_len_incorrect_p50', label: 'incorrect p50', dash: 'dash'},
  {get: 'response_len_incorrect_p90', label: 'incorrect p90', dash: 'dashdot'},
  {get: 'truncated_frac', label: 'truncated share', dash: 'longdash', y2: true}]};
// Partial rollouts (rl/partial, k1.5 §2.6.2): the replay buffer after each iteration, segments per
// trajectory trained on, trajectories stopped for repeating.
const PARTIAL_PANEL = {id: 'partial', title: 'Partial rollouts: replay buffer, segments, repeat stops',
  key: 'partial_buffer_trajectories', before: 'kl', y: 'trajectories', y2: 'segments per trajectory', series: [
  {get: 'partial_buffer_trajectories', label: 'in the buffer'},
  {get: 'partial_buffer_running', label: 'in the buffer: to continue', dash: 'dot'},
  {get: 'partial_repeat_stops', label: 'repeat stops', dash: 'dash'},
  {get: 'partial_segments_mean', label: 'segments per trained trajectory', dash: 'dashdot', y2: true}]};
const OPTIONAL_PANELS = [LENGTH_DIST_PANEL, PARTIAL_PANEL, MOE_PANEL];

function ensurePanel(spec, runs) {
  if (document.getElementById('panel-' + spec.id)) return true;
  if (!runs.some((r) => series(r, spec.key).x.length)) return false;
  const sec = el('section', {class: 'card', 'data-panel': spec.id},
                 el('h2', {}, spec.title), el('div', {class: 'plot', id: 'panel-' + spec.id}));
  document.querySelector('[data-panel="' + spec.before + '"]').before(sec);
  return true;
}

function baseLayout(extra) {
  return Object.assign({
    margin: {l: 58, r: 58, t: 10, b: 44}, height: 380, uirevision: 'keep', hovermode: 'x unified',
    // Legend above the plot: below it, it collides with the x-axis title.
    legend: {orientation: 'h', x: 0, xanchor: 'left', y: 1.02, yanchor: 'bottom', font: {size: 11}},
    xaxis: {title: {text: xTitle()}, automargin: true},
  }, extra);
}

function linePanel(spec, runs) {
  const traces = [];
  let usesY2 = false;
  for (const run of runs) for (const s of spec.series) {
    const {x, y, rows} = series(run, s.get);
    if (!x.length) continue;
    const label = typeof s.label === 'function' ? s.label(run) : s.label;
    const t = {type: 'scatter', mode: s.markers || x.length === 1 ? 'lines+markers' : 'lines',
               name: escapeSvg(run.name + ' · ' + label), legendgroup: run.name, x, y,
               line: {color: run.color, dash: s.dash || 'solid', width: 2}, marker: {size: 6}};
    if (s.y2) { t.yaxis = 'y2'; usesY2 = true; }
    if (s.custom) { t.customdata = rows.map(s.custom); t.hovertemplate = s.hover + '<extra>' + t.name + '</extra>'; }
    traces.push(t);
  }
  const layout = baseLayout({yaxis: {title: {text: spec.y}, automargin: true}});
  if (usesY2) layout.yaxis2 = {title: {text: spec.y2}, overlaying: 'y', side: 'right', showgrid: false, automargin: true};
  return {traces, layout};
}

// One row of subplots per run (heatmaps and stacked bars do not overlay across runs).
function gridLayout(runs, extra) {
  const layout = baseLayout(Object.assign({height: 140 + 200 * runs.length, hovermode: 'closest',
    // Legend pinned to the figure's bottom edge, in a margin reserved for it (paper-relative
    // placement drifts onto the x-axis title as the number of runs changes the height).
    margin: {l: 58, r: 58, t: 24, b: 100},
    legend: {orientation: 'h', x: 0, xanchor: 'left', yref: 'container', y: 0, yanchor: 'bottom', font: {size: 11}},
    grid: {rows: runs.length, columns: 1, pattern: 'independent', roworder: 'top to bottom'},
    annotations: runs.map((run, i) => ({text: '<b>' + escapeSvg(run.name) + '</b>', showarrow: false,
      xref: 'x' + (i ? i + 1 : '') + ' domain', yref: 'y' + (i ? i + 1 : '') + ' domain',
      x: 0, y: 1, xanchor: 'left', yanchor: 'bottom', yshift: 2, font: {color: run.color}}))}, extra));
  runs.forEach((run, i) => {
    layout['xaxis' + (i ? i + 1 : '')] = {title: {text: i === runs.length - 1 ? xTitle() : ''}, automargin: true};
    layout['yaxis' + (i ? i + 1 : '')] = Object.assign({automargin: true}, extra.yaxisAll || {});
  });
  delete layout.yaxisAll;
  return layout;
}
// Plotly renders trace names, tick labels and annotations as (limited) HTML: escape what
// comes from run data (run names, difficulty keys) so it displays literally.
function escapeSvg(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
const axisRef = (i) => ({xaxis: 'x' + (i ? i + 1 : ''), yaxis: 'y' + (i ? i + 1 : '')});

function difficultyPanel(runs) {
  const key = state.diffSource;
  const labels = labelsOf(runs, key);
  const shown = runs.filter((run) => series(run, (r) => r[key] ? 0 : null).x.length);
  const traces = shown.map((run, i) => {
    const {x, rows} = series(run, (r) => r[key] ? 0 : null);
    const z = labels.map((d) => rows.map((r) => isNum(r[key][d]) ? r[key][d] : null));
    return Object.assign({type: 'heatmap', name: escapeSvg(run.name), x, y: labels.map(escapeSvg), z,
      zmin: 0, zmax: 1, colorscale: 'Viridis', showscale: i === 0, xgap: 1, ygap: 1,
      colorbar: {title: {text: 'pass rate'}, len: 0.9},
      hovertemplate: 'difficulty %{y}<br>' + xTitle() + ' %{x}<br>pass rate %{z:.3f}<extra>' +
                     escapeSvg(run.name) + '</extra>'}, axisRef(i));
  });
  const layout = gridLayout(shown, {yaxisAll: {title: {text: 'difficulty'}, type: 'category',
    categoryorder: 'array', categoryarray: labels.map(escapeSvg)}});
  return {traces, layout};
}

function stackedPanel(runs, parts, lineSpec, yTitle) {
  const shown = runs.filter((run) => parts(run).some((p) => p.x.length));
  const traces = [];
  shown.forEach((run, i) => {
    for (const p of parts(run)) {
      if (!p.x.length) continue;
      traces.push(Object.assign({type: 'bar', name: p.name, legendgroup: p.name, showlegend: i === 0,
                                 x: p.x, y: p.y, marker: {color: p.color}}, axisRef(i)));
    }
    if (lineSpec) {
      const s = series(run, lineSpec.get);
      if (s.x.length) traces.push(Object.assign({type: 'scatter', mode: 'lines+markers',
        name: escapeSvg(run.name + ' · ' + lineSpec.label), x: s.x, y: s.y,
        line: {color: '#111', dash: 'dot', width: 2}, marker: {size: 5}}, axisRef(i)));
    }
  });
  return {traces, layout: gridLayout(shown, {barmode: 'stack', bargap: 0.15, yaxisAll: {title: {text: yTitle}}})};
}

function samplerPanel(runs) {
  const labels = labelsOf(runs, 'sampler_difficulty_hist');
  const color = (i) => 'hsl(' + Math.round(210 - 200 * i / Math.max(1, labels.length - 1)) + ',65%,52%)';
  return stackedPanel(runs, (run) => labels.map((d, i) => {
    const s = series(run, (r) => r.sampler_difficulty_hist ? (r.sampler_difficulty_hist[d] ?? 0) : null);
    return {name: escapeSvg('difficulty ' + d), x: s.x, y: s.y, color: color(i)};
  }), {get: 'sampler_filtered', label: 'filtered'}, 'prompts');
}

function phasesPanel(runs) {
  return stackedPanel(runs, (run) => PHASES.map(([key, name, color]) => {
    const s = series(run, key);
    return {name, x: s.x, y: s.y, color};
  }), null, 'seconds');
}

function drawPanel(id, fig) {
  const div = document.getElementById('panel-' + id);
  const hasData = fig.traces.some((t) => (t.x && t.x.length) || (t.z && t.z.length));
  div.dataset.traces = String(fig.traces.length);
  if (!hasData) {
    if (div.dataset.plotted) { Plotly.purge(div); delete div.dataset.plotted; }
    div.replaceChildren(el('div', {class: 'empty'}, 'no data for this panel yet'));
    return;
  }
  if (!div.dataset.plotted) div.replaceChildren();
  div.dataset.plotted = '1';
  Plotly.react(div, fig.traces, fig.layout, CONFIG);
}

// ---------------------------------------------------------------- runs table
function renderRuns(runs) {
  const body = document.querySelector('#runs tbody');
  body.replaceChildren(...runs.map((run) => {
    const files = el('td', {});
    for (const [label, obj] of [['summary.json', run.summary], ['sft_eval.json', run.sftEval]]) {
      if (obj == null) continue;
      files.append(el('details', {}, el('summary', {}, label), el('pre', {}, JSON.stringify(obj, null, 2))));
    }
    for (const w of run.warnings || []) files.append(el('div', {class: 'warn'}, w));
    // The start-of-run eval (before the first update) is in summary.json, not in a metrics row.
    const s0 = run.summary && isNum(run.summary.start_eval_pass_at_1) ? run.summary.start_eval_pass_at_1 : null;
    const e0 = s0 != null ? s0 : firstValue(run, 'eval_pass_at_1'), e1 = lastValue(run, 'eval_pass_at_1');
    const sft = run.sftEval && isNum(run.sftEval.pass_at_1) ? ' (SFT ' + fmt(run.sftEval.pass_at_1, 3) + ')' : '';
    const last = run.points.length ? run.points[run.points.length - 1].iteration : null;
    return el('tr', {'data-run': run.name},
      el('td', {title: run.path || ''}, el('span', {class: 'swatch', style: 'background:' + run.color}),
         el('span', {class: 'run-name'}, run.name)),
      el('td', {class: 'num'}, run.points.length), el('td', {class: 'num'}, fmt(last)),
      el('td', {class: 'num'}, fmt(e0, 3) + ' → ' + fmt(e1, 3) + sft),
      el('td', {class: 'num'}, fmt(lastValue(run, 'reward_mean'), 4)), files);
  }));
}

// ---------------------------------------------------------------- rollout browser
const rb = state.rb;
function fillSelect(select, values, current) {
  const now = [...select.options].map((o) => o.value).join('\u0000');
  if (now !== values.map(String).join('\u0000')) {
    select.replaceChildren(...values.map((v) => el('option', {value: String(v)}, v)));
  }
  if (current != null) select.value = String(current);
}

async function renderRollouts() {
  const runs = [...state.runs.values()].filter((r) => r.sampleCounts && Object.keys(r.sampleCounts).length);
  const runSel = document.getElementById('rb-run'), iterSel = document.getElementById('rb-iter');
  if (!runs.length) {
    document.getElementById('rb-count').textContent = 'no samples.jsonl rows yet';
    return;
  }
  if (!runs.some((r) => r.name === rb.run)) { rb.run = runs[0].name; rb.follow = true; }
  fillSelect(runSel, runs.map((r) => r.name), rb.run);
  const run = state.runs.get(rb.run);
  const iters = Object.keys(run.sampleCounts).map(Number).sort((a, b) => a - b);
  if (rb.follow || !iters.includes(rb.iter)) rb.iter = iters[iters.length - 1];
  fillSelect(iterSel, iters.slice().reverse(), rb.iter);
  const count = run.sampleCounts[String(rb.iter)];
  const got = await loadSamples(run, rb.iter, count);
  if (run.name !== rb.run || rb.iter !== Number(iterSel.value)) return;  // changed while loading
  const want = (s) => rb.filter === 'all' || (rb.filter === 'correct') === isCorrect(s);
  rb.shown = got.samples.filter(want);
  rb.selected = Math.min(rb.selected, Math.max(0, rb.shown.length - 1));
  document.getElementById('rb-count').textContent = rb.shown.length + ' shown of ' + got.total +
    ' samples' + (got.samples.length < got.total ? ' (' + got.samples.length + ' loaded)' : '');
  document.querySelector('#rb-table tbody').replaceChildren(...rb.shown.map((s, i) => {
    const tr = el('tr', {'data-index': i, class: i === rb.selected ? 'selected' : ''},
      el('td', {class: 'num'}, i + 1), el('td', {}, s.prompt_id ?? '–'), el('td', {}, s.difficulty ?? '–'),
      el('td', {class: 'num'}, fmt(s.reward)), el('td', {class: 'num ' + (isCorrect(s) ? 'ok' : 'bad')}, fmt(s.score)),
      el('td', {class: 'num'}, fmt(s.length)), el('td', {}, s.reason ?? ''));
    tr.addEventListener('click', () => { rb.selected = i; renderRollouts(); });
    return tr;
  }));
  showSample(rb.shown[rb.selected]);
}

function isCorrect(s) {
  if (isNum(s.score)) return s.score >= CORRECT_THRESHOLD;  // rl.rewards.scores.is_correct
  if (typeof s.score === 'boolean') return s.score;
  return isNum(s.reward) && s.reward > 0;
}

function showSample(s) {
  const text = (key) => {
    if (!s || typeof s[key] !== 'string') return s ? '(no ' + key + ')' : '';
    const full = s[key + '_chars'];
    return s[key] + (full ? '\n… [truncated: ' + full + ' characters in samples.jsonl]' : '');
  };
  for (const key of ['prompt', 'response']) {  // unchanged text keeps its scroll position
    const node = document.getElementById('rb-' + key), t = text(key);
    if (node.textContent !== t) node.textContent = t;
  }
  const meta = document.getElementById('rb-meta');
  meta.replaceChildren();
  if (!s) return;
  for (const [k, v] of [['reward', fmt(s.reward)], ['score', fmt(s.score)], ['length reward', fmt(s.length_reward)],
                        ['length', fmt(s.length)], ['verifier', s.reason ?? '–']]) {
    meta.append(el('span', {}, el('b', {}, k + ': '), v));
  }
}

async function loadSamples(run, iter, count) {
  if (boot.mode === 'static') {
    const samples = (run.samples && run.samples[String(iter)]) || [];
    return {samples, total: count ?? samples.length};
  }
  const key = run.name + '\u0000' + iter + '\u0000' + count;
  if (!state.sampleCache.has(key)) {
    const url = 'api/samples?run=' + encodeURIComponent(run.name) + '&iteration=' + iter;
    const resp = await fetch(url, {cache: 'no-store'});
    if (!resp.ok) throw new Error('samples: HTTP ' + resp.status);
    state.sampleCache.set(key, await resp.json());
  }
  return state.sampleCache.get(key);
}

// ---------------------------------------------------------------- main loop
function render() {
  const runs = [...state.runs.values()];
  renderRuns(runs);
  for (const spec of LINE_PANELS) drawPanel(spec.id, linePanel(spec, runs));
  for (const spec of OPTIONAL_PANELS) if (ensurePanel(spec, runs)) drawPanel(spec.id, linePanel(spec, runs));
  drawPanel('difficulty', difficultyPanel(runs));
  drawPanel('sampler', samplerPanel(runs));
  drawPanel('phases', phasesPanel(runs));
  document.body.dataset.renders = String(++state.renders);
  return renderRollouts().catch(reportError);
}

function setStatus(text, error) {
  const s = document.getElementById('status');
  s.textContent = text;
  s.className = error ? 'error' : '';
}
function reportError(err) { setStatus('error: ' + (err && err.message || err), true); }

async function poll() {
  const cursor = {};
  for (const run of state.runs.values()) cursor[run.name] = [run.gen, run.rows.length];
  try {
    const resp = await fetch('api/data?cursor=' + encodeURIComponent(JSON.stringify(cursor)), {cache: 'no-store'});
    if (!resp.ok) throw new Error('HTTP ' + resp.status);
    if (ingest(await resp.json())) await render();
    document.body.dataset.polls = String(++state.polls);
    setStatus('live · refreshing every ' + boot.refresh_s + ' s · updated ' + new Date().toLocaleTimeString());
  } catch (err) {
    setStatus('disconnected (' + err.message + '); retrying every ' + boot.refresh_s + ' s', true);
  }
  setTimeout(poll, boot.refresh_s * 1000);
}

function bind(id, fn) { document.getElementById(id).addEventListener('change', (e) => { fn(e.target.value); }); }
bind('x-mode', (v) => { state.xmode = v; render(); });
bind('diff-source', (v) => { state.diffSource = v; render(); });
bind('rb-run', (v) => { rb.run = v; rb.follow = true; rb.selected = 0; renderRollouts().catch(reportError); });
bind('rb-iter', (v) => {
  const run = state.runs.get(rb.run), iters = Object.keys(run.sampleCounts).map(Number);
  rb.iter = Number(v); rb.follow = rb.iter === Math.max(...iters); rb.selected = 0;
  renderRollouts().catch(reportError);
});
bind('rb-filter', (v) => { rb.filter = v; rb.selected = 0; renderRollouts().catch(reportError); });

ingest(boot.data);
render().then(() => {
  document.body.dataset.ready = '1';
  if (boot.mode === 'live') {
    setStatus('live · refreshing every ' + boot.refresh_s + ' s');
    setTimeout(poll, boot.refresh_s * 1000);
  } else {
    setStatus('static snapshot · ' + boot.generated);
  }
});
})();
