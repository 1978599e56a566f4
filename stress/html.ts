/**
 * The HTML report (`--html FILE` for run, replay, campaign, merge, zoo and bench): one
 * self-contained file, no script and nothing fetched, plots drawn as inline
 * SVG. Every text taken from a report (messages, traces, flags, names) goes
 * through esc(): a violation message holding `<script>` shows as text.
 */
import type { Report } from './report.js';
import type { CampaignResult } from './campaign.js';
import type { ZooCell, ZooRow } from './zoo.js';
import type { BenchResults } from '../bench/run.js';

/** HTML-escape text for element content and attribute values. */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const PALETTE = ['#3b6fb6', '#d9822b', '#3a9a5b', '#b6443b', '#7b5cb3', '#8c6d31', '#c34e9c', '#5a5a5a'];

function fmt(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const a = Math.abs(n);
  if (a >= 1e6) return `${(n / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
  if (a >= 10 || n === 0) return String(Math.round(n));
  return n.toFixed(2);
}

export interface BarRow {
  label: string;
  values: number[];
}

/** Horizontal bars, one group per row, one bar per series. */
export function svgBars(title: string, series: string[], rows: BarRow[], unit = ''): string {
  if (rows.length === 0) return `<figure class="plot"><figcaption>${esc(title)}</figcaption><p class="none">nothing to plot</p></figure>`;
  const labelW = Math.min(420, 12 + 7 * Math.max(...rows.map((r) => r.label.length)));
  const barH = 14;
  const groupH = series.length * barH + 8;
  const plotW = 460;
  const legendH = series.length > 1 ? 22 : 0;
  const h = legendH + rows.length * groupH + 24;
  const w = labelW + plotW + 70;
  const max = Math.max(1e-9, ...rows.flatMap((r) => r.values.filter(Number.isFinite)));
  const parts: string[] = [];
  series.forEach((s, i) => {
    if (series.length > 1) parts.push(`<rect x="${labelW + i * 150}" y="4" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/><text x="${labelW + i * 150 + 16}" y="14">${esc(s)}</text>`);
  });
  rows.forEach((r, ri) => {
    const y0 = legendH + ri * groupH;
    parts.push(`<text x="${labelW - 6}" y="${y0 + groupH / 2 + 3}" text-anchor="end">${esc(r.label)}</text>`);
    r.values.forEach((v, si) => {
      const bw = Number.isFinite(v) ? Math.max(v > 0 ? 1 : 0, (v / max) * plotW) : 0;
      const y = y0 + 4 + si * barH;
      parts.push(`<rect class="bar" x="${labelW}" y="${y}" width="${bw.toFixed(1)}" height="${barH - 2}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${r.label}, ${series[si]}: ${v}${unit}`)}</title></rect>`);
      parts.push(`<text x="${labelW + bw + 4}" y="${y + barH - 4}" class="val">${esc(fmt(v) + unit)}</text>`);
    });
  });
  parts.push(`<line x1="${labelW}" y1="${legendH}" x2="${labelW}" y2="${h - 20}" stroke="#888"/>`);
  return `<figure class="plot"><figcaption>${esc(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${parts.join('')}</svg></figure>`;
}

export interface LineSeries {
  name: string;
  points: [number, number][];
  /** Draw as a step function (a CDF). */
  step?: boolean;
}

/** Lines over a shared x axis, with axis ticks at min, middle and max. */
export function svgLines(title: string, series: LineSeries[], xLabel: string, yLabel: string): string {
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return `<figure class="plot"><figcaption>${esc(title)}</figcaption><p class="none">nothing to plot</p></figure>`;
  const w = 640;
  const h = 300;
  const left = 60;
  const bottom = 40;
  const top = series.length > 1 ? 28 : 12;
  const right = 16;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1e-9);
  const y0 = Math.min(0, ...ys);
  const y1 = Math.max(...ys, y0 + 1e-9);
  const X = (x: number): number => left + ((x - x0) / (x1 - x0)) * (w - left - right);
  const Y = (y: number): number => h - bottom - ((y - y0) / (y1 - y0)) * (h - bottom - top);
  const parts: string[] = [];
  parts.push(`<line x1="${left}" y1="${h - bottom}" x2="${w - right}" y2="${h - bottom}" stroke="#888"/><line x1="${left}" y1="${top}" x2="${left}" y2="${h - bottom}" stroke="#888"/>`);
  for (const t of [x0, (x0 + x1) / 2, x1]) parts.push(`<text x="${X(t).toFixed(1)}" y="${h - bottom + 14}" text-anchor="middle" class="val">${esc(fmt(t))}</text>`);
  for (const t of [y0, (y0 + y1) / 2, y1]) parts.push(`<text x="${left - 4}" y="${(Y(t) + 3).toFixed(1)}" text-anchor="end" class="val">${esc(fmt(t))}</text>`);
  parts.push(`<text x="${(left + w - right) / 2}" y="${h - 6}" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text x="12" y="${(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(top + h - bottom) / 2})">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    const d: string[] = [];
    sorted.forEach(([x, y], k) => {
      if (s.step && k > 0) d.push(`${X(x).toFixed(1)},${Y(sorted[k - 1][1]).toFixed(1)}`);
      d.push(`${X(x).toFixed(1)},${Y(y).toFixed(1)}`);
    });
    if (d.length === 1) parts.push(`<circle cx="${d[0].split(',')[0]}" cy="${d[0].split(',')[1]}" r="3" fill="${color}"/>`);
    else parts.push(`<polyline class="line" fill="none" stroke="${color}" stroke-width="2" points="${d.join(' ')}"><title>${esc(s.name)}</title></polyline>`);
    if (series.length > 1) parts.push(`<rect x="${left + i * 150}" y="6" width="12" height="12" fill="${color}"/><text x="${left + i * 150 + 16}" y="16">${esc(s.name)}</text>`);
  });
  return `<figure class="plot"><figcaption>${esc(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${parts.join('')}</svg></figure>`;
}

/** The empirical CDF of a sample: (value, share of the sample <= value). */
export function cdfPoints(values: number[], total = values.length): [number, number][] {
  const s = [...values].sort((a, b) => a - b);
  return s.map((v, i) => [v, (i + 1) / Math.max(1, total)]);
}

function table(head: string[], rows: (string | number)[][]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

const STYLE = `body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.pass{color:#1d7a3a}.fail{color:#b32d2d}.badge{font-weight:bold}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,pre,.mono{font-family:ui-monospace,monospace;font-size:12.5px}pre{background:#f7f7f7;padding:8px;overflow-x:auto;white-space:pre-wrap}
figure.plot{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}svg text{font:11px system-ui,sans-serif;fill:#333}svg text.val{fill:#555}.none{color:#888}`;

function page(title: string, body: string[]): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><style>${STYLE}</style></head>
<body>
${body.join('\n')}
</body></html>
`;
}

/** Accesses and faults per second between timeline samples. */
function rates(r: Report): LineSeries[] {
  const t = r.timeline ?? [];
  const acc: [number, number][] = [];
  const flt: [number, number][] = [];
  for (let i = 1; i < t.length; i++) {
    const dt = (t[i].ms - t[i - 1].ms) / 1000;
    if (dt <= 0) continue;
    acc.push([t[i].ms / 1000, (t[i].accesses - t[i - 1].accesses) / dt]);
    flt.push([t[i].ms / 1000, (t[i].faults - t[i - 1].faults) / dt]);
  }
  return [
    { name: 'accesses/s', points: acc },
    { name: 'faults/s', points: flt },
  ];
}

/** The report of one run. */
export function htmlRun(r: Report): string {
  const c = r.config;
  const body: string[] = [];
  body.push(`<h1>s2stress run: <span class="badge ${r.result}">${esc(r.result.toUpperCase())}</span></h1>`);
  body.push(`<p>scenario <b>${esc(c.scenario)}</b>, profile <b>${esc(c.profile)}</b> (${esc(r.arch)}), ${esc(c.mode)} mode, ${esc(c.vcpus)} vCPUs, seed ${esc(c.seed)}, ${esc((r.elapsedMs / 1000).toFixed(2))} s${r.interrupted ? `, interrupted by ${esc(r.signal)}` : ''}${c.bugs.length ? `; injected: ${esc(c.bugs.join(', '))}` : ''}</p>`);
  body.push(`<p>rerun: <code>${esc(r.replay)}</code></p>`);
  if (r.error) body.push(`<h2>Harness failure</h2><pre>${esc(r.error)}</pre>`);
  body.push(`<h2>Violations (${r.violations.length})</h2>`);
  if (r.violations.length) body.push(table(['invariant', 'actor', 'message'], r.violations.map((v) => [v.invariant, v.actor, v.message])));
  else body.push('<p>none</p>');
  body.push('<h2>Throughput over time</h2>');
  body.push(svgLines('accesses and faults per second', rates(r), 'seconds since the run started', 'per second'));
  const sites = r.lock?.sites ?? [];
  body.push('<h2>mmu_lock: wait and hold per site</h2>');
  const us = (ns: number): number => ns / 1000;
  const rows = sites.map((x) => ({ label: `${x.site}${x.side === 'read' ? ' (read)' : ''}`, s: x }));
  if (!r.lock?.enabled) body.push('<p class="none">lock statistics were off (--no-lock-stats)</p>');
  body.push(svgBars('average wait (contended acquisitions) and hold, us', ['wait avg', 'hold avg'], rows.map((x) => ({ label: x.label, values: [us(x.s.waitNs.avg), us(x.s.holdNs.avg)] })), ' us'));
  body.push(svgBars('p99 wait and hold, us', ['wait p99', 'hold p99'], rows.map((x) => ({ label: x.label, values: [us(x.s.waitNs.p99), us(x.s.holdNs.p99)] })), ' us'));
  body.push(table(['site', 'side', 'acquired', 'contended'], rows.map((x) => [x.s.site, x.s.side, x.s.acquisitions, x.s.contentions])));
  body.push('<h2>Counters</h2>');
  body.push(table(['counter', 'value'], Object.entries(r.counters).filter(([, v]) => v !== 0).map(([k, v]) => [k, v])));
  if (Object.keys(r.traces ?? {}).length) {
    body.push('<h2>Last events of every actor</h2>');
    for (const [a, ev] of Object.entries(r.traces)) body.push(`<h3>${esc(a)}</h3><pre>${esc(ev.join('\n'))}</pre>`);
  }
  return page(`s2stress ${r.result}: ${c.scenario}, ${c.profile}, seed ${c.seed}`, body);
}

/** The report of a campaign. */
export function htmlCampaign(r: CampaignResult): string {
  const t = r.totals;
  const bad = t.failed > 0 || t.errors > 0;
  const body: string[] = [];
  body.push(`<h1>s2stress campaign: <span class="badge ${bad ? 'fail' : 'pass'}">${bad ? 'FAIL' : 'PASS'}</span></h1>`);
  body.push(`<p>seeds ${esc(r.definition.seeds[0])}..${esc(r.definition.seeds[1])}; profiles ${esc(r.definition.profiles.join(', '))}; scenarios ${esc(r.definition.scenarios.join(', '))}; backings ${esc(r.definition.backings.join(', '))}; run flags <code>${esc(r.definition.runFlags.join(' '))}</code></p>`);
  body.push(`<p>${esc(t.runs)} runs: ${esc(t.passed)} passed, ${esc(t.failed)} failed, ${esc(t.errors)} could not run${t.interrupted ? `, ${esc(t.interrupted)} interrupted` : ''}${t.missing ? `, ${esc(t.missing)} not run` : ''}; ${esc(r.signatures.length)} distinct failures; ${esc((r.host.elapsedMs / 1000).toFixed(1))} s with ${esc(r.host.jobs)} at a time</p>`);
  body.push('<h2>Failures by signature</h2>');
  body.push(svgBars('failing runs per signature', ['runs'], r.signatures.map((s) => ({ label: s.signature.length > 90 ? `${s.signature.slice(0, 87)}...` : s.signature, values: [s.count] }))));
  // Discovery: distinct signatures found as the runs went by (job order).
  const seen = new Set<string>();
  const disc: [number, number][] = [[0, 0]];
  r.runs.forEach((run, i) => {
    if (run.signature && !seen.has(run.signature)) {
      seen.add(run.signature);
      disc.push([i + 1, seen.size]);
    }
  });
  disc.push([r.runs.length, seen.size]);
  body.push(svgLines('distinct failures found over the runs (job order)', [{ name: 'signatures', points: disc, step: true }], 'runs', 'distinct failures'));
  body.push(table(['count', 'signature', 'first seed', 'reproducer', 'replay'], r.signatures.map((s) => [s.count, s.signature, s.firstSeed, s.file, s.replay])));
  for (const s of r.signatures) body.push(`<p class="mono">${esc(s.reproducer)}: ${esc(s.example)}</p>`);
  return page(`s2stress campaign: ${t.failed} failed of ${t.runs}`, body);
}

/** The report of a zoo run (its kill table). */
export function htmlZoo(rows: ZooRow[], meta: string): string {
  const body: string[] = [];
  const cells = (m: 'sim' | 'threads'): [string, ZooCell][] => rows.filter((r) => r[m]).map((r) => [r.bug, r[m]!]);
  const caughtAll = rows.every((r) => (r.sim === null || r.sim.caught > 0) && (r.threads === null || r.threads.caught > 0));
  body.push(`<h1>s2stress zoo: <span class="badge ${caughtAll ? 'pass' : 'fail'}">${caughtAll ? 'every defect caught' : 'defects missed'}</span></h1>`);
  body.push(`<p>${esc(meta)}</p>`);
  body.push('<h2>Time to first detection</h2>');
  const series: LineSeries[] = [];
  for (const m of ['sim', 'threads'] as const) {
    const all = cells(m).flatMap(([, c]) => c.seeds ?? []);
    if (all.length === 0) continue;
    const caught = all.filter((s) => s.caught).map((s) => s.ms / 1000);
    series.push({ name: `${m} (${caught.length}/${all.length} caught)`, points: [[0, 0], ...cdfPoints(caught, all.length)], step: true });
  }
  body.push(svgLines('share of (defect, seed) runs that caught their defect within t (CDF)', series, 'seconds', 'share caught'));
  body.push(
    svgBars(
      'median time to detection per defect, s',
      ['sim', 'threads'],
      rows.map((r) => ({ label: r.bug, values: [r.sim?.medianMs != null ? r.sim.medianMs / 1000 : NaN, r.threads?.medianMs != null ? r.threads.medianMs / 1000 : NaN] })),
      ' s',
    ),
  );
  const cell = (c: ZooCell | null): string => (c === null ? '-' : `${c.caught}/${c.tried}, ${c.medianMs === null ? '>budget' : `${(c.medianMs / 1000).toFixed(2)} s`}${c.invariant ? ` (${c.invariant})` : ''}`);
  body.push(table(['defect', 'expected', 'sim', 'threads'], rows.map((r) => [r.bug, r.expected, cell(r.sim), cell(r.threads)])));
  return page('s2stress zoo', body);
}

/**
 * The results of `s2stress bench --html FILE`: how throughput scales with
 * vCPUs (accesses, faults and mmu_lock contention, per lock kind), the two
 * sides of dirty_log_perf_test by vCPUs, and sim throughput.
 */
export function htmlBench(r: BenchResults): string {
  const body: string[] = [];
  const mc = r.machine;
  const met = r.targets.filter((t) => t.met).length;
  body.push(`<h1>s2stress bench: <span class="badge ${met === r.targets.length ? 'pass' : 'fail'}">${esc(met)}/${esc(r.targets.length)} targets met</span></h1>`);
  body.push(`<p>${esc(mc.cpuModel)}, ${esc(mc.nproc)} cores, Node ${esc(mc.node)}, ${esc(mc.platform)}; ${esc(mc.date)}; load average ${esc(mc.loadavgStart.join(' '))} at the start, ${esc(mc.loadavgEnd.join(' '))} at the end</p>`);
  if (r.scaling) {
    const sc = r.scaling;
    body.push(`<h2>Scaling by vCPUs</h2><p>scenario ${esc(sc.scenario)}, ${esc(sc.guestMem)} guest, ${esc((sc.durationMs / 1000).toFixed(1))} s per point, ${esc(sc.cores)} cores. ${esc(sc.note)}</p>`);
    const locks = [...new Set(sc.points.map((p) => p.lock))];
    const by = (f: (p: (typeof sc.points)[number]) => number | null): LineSeries[] =>
      locks.map((l) => ({
        name: l,
        points: sc.points.filter((p) => p.lock === l && p.result === 'pass' && f(p) !== null).map((p) => [p.vcpus, f(p)!] as [number, number]),
      }));
    body.push(svgLines('guest accesses per second by vCPUs', by((p) => p.accessesPerSec), 'vCPUs', 'accesses/s'));
    body.push(svgLines('stage-2 faults per second by vCPUs', by((p) => p.faultsPerSec), 'vCPUs', 'faults/s'));
    body.push(svgLines('mmu_lock: share of acquisitions that waited, by vCPUs', by((p) => p.contentionRatio), 'vCPUs', 'contended share'));
    body.push(
      table(
        ['lock', 'vCPUs', 'result', 'accesses/s', 'faults/s', 'contended', 'wait avg us', 'wait p99 us'],
        sc.points.map((p) => [
          p.lock,
          p.vcpus,
          p.result,
          fmt(p.accessesPerSec),
          fmt(p.faultsPerSec),
          p.contentionRatio === null ? '-' : `${(p.contentionRatio * 100).toFixed(1)}%`,
          p.waitAvgNs === null ? '-' : fmt(p.waitAvgNs / 1000),
          p.waitP99Ns === null ? '-' : fmt(p.waitP99Ns / 1000),
        ]),
      ),
    );
  }
  if (r.dirtyLog) {
    const d = r.dirtyLog;
    body.push(`<h2>dirty_log_perf_test by vCPUs</h2><p><code>${esc(d.command)}</code>: ${esc(d.profiles.old.profile)} (${esc(d.profiles.old.lock)}) against ${esc(d.profiles.new.profile)} (${esc(d.profiles.new.lock)}), ${esc(d.vcpuMem)} per vCPU</p>`);
    const side = (k: 'oldMs' | 'newMs'): [number, number][] => d.rows.filter((x) => x[k] !== null).map((x) => [x.vcpus, x[k]!]);
    body.push(
      svgLines(
        'dirty memory time per iteration by vCPUs, ms',
        [
          { name: d.profiles.old.profile, points: side('oldMs') },
          { name: d.profiles.new.profile, points: side('newMs') },
        ],
        'vCPUs',
        'ms per iteration',
      ),
    );
  }
  if (r.sim) {
    const sm = r.sim;
    body.push(`<h2>Sim mode against threads mode</h2><p>1 vCPU, scenario ${esc(sm.scenario)}, ${esc(sm.ops)} accesses per run, ${esc(sm.rounds)} rounds</p>`);
    body.push(svgBars('guest accesses per second (median)', ['accesses/s'], sm.rows.map((x) => ({ label: x.mode, values: [x.median] }))));
    const sr = sm.seedRate;
    if (sr) {
      body.push(
        `<p>campaign throughput: <b>${esc(sr.seedsPerCpuMinute.toFixed(2))} seeds per CPU-minute</b> of ${esc(sr.config.scenario)}, ${esc(sr.config.vcpus)} vCPUs, ${esc(sr.config.ops)} accesses${sr.args.length ? ` (<code>${esc(sr.args.join(' '))}</code>)` : ' (the default sim configuration)'}, seeds ${esc(sr.seeds.join(', '))}</p>`,
      );
    }
  }
  if (r.targets.length) body.push('<h2>Targets</h2>', table(['target', 'wanted', 'measured', ''], r.targets.map((t) => [t.name, t.target, t.measured, t.met ? 'met' : 'MISSED'])));
  return page(`s2stress bench, ${mc.date}`, body);
}
