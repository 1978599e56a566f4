#!/usr/bin/env node
/**
 * The README's profile table, measured: each kernel profile in the
 * configuration that shows what it finds (and the fixed ones in the same
 * configurations, where they must stay clean), over seeds 1..N in sim and
 * threads mode, one run at a time.
 *
 *   node scripts/profile-table.mjs [--seeds N] [--json FILE] [--only PROFILE]
 *
 * A seed counts as caught when the run fails with one of the invariants the
 * row names; a run that fails by another one is counted apart ("other"), and
 * a clean row must pass every seed. Times are the report's elapsedMs (from
 * the moment every actor runs to the verdict: the time to detection), as
 * medians over the seeds, a missed seed counting as the budget. Prints a
 * Markdown table and the load average. Needs `npm run build` (npm run
 * profiles:measure builds first).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'stress', 'cli.js');

const SIM_OPS = 60_000;
const THREADS_MS = 10_000;

/** profile, scenario, backing, extra flags, invariants that count as the finding (empty: must stay clean). */
const ROWS = [
  { profile: 'v14', scenario: 'migrate', backing: 'thp', finds: ['migration-equal', 'selftest-dirty-log'], note: 'read faults map writable, unlogged' },
  { profile: 'v14', scenario: 'cancel', backing: 'thp', finds: ['table-conservation', 'break-before-make'], note: 'block over a PTE table' },
  { profile: 'v14', scenario: 'cancel', backing: 'thp', extra: ['--arch', 'arm64'], finds: ['break-before-make', 'tlb-coherent', 'table-conservation'], note: 'arm64 flushes: the dissolve flushes the output address' },
  { profile: '4.0', scenario: 'cancel', backing: 'thp', finds: ['break-before-make', 'table-conservation'], note: 'block written over a PTE table, then flushed' },
  { profile: '4.5', scenario: 'thp-churn', backing: 'thp', finds: ['stage2-host-coherent', 'shadow-equal', 'frame-conservation', 'kernel-bug'], findsMessage: /went from table#\d+ to block/, note: 'block over a THP mapped by PTEs (written over its PTE table: break-before-make)' },
  { profile: '4.6', scenario: 'thp-churn', backing: 'thp', finds: [], allow: ['break-before-make'], note: 'PageTransCompoundMap (its write-then-flush hazard allowed)' },
  { profile: '4.7', scenario: 'cancel', backing: 'thp', finds: ['table-conservation', 'break-before-make', 'tlb-coherent'], note: 'block over a PTE table, stale 4 KiB entries' },
  { profile: '4.11', scenario: 'teardown', backing: 'anon', finds: ['table-use-after-free'], note: 'walk after kvm_free_stage2_pgd' },
  { profile: '4.12', scenario: 'teardown', backing: 'anon', finds: [], note: 're-checks kvm->arch.pgd' },
  { profile: '4.19', scenario: 'cancel', backing: 'thp', finds: ['table-conservation', 'break-before-make', 'tlb-coherent'], note: 'block over a PTE table' },
  { profile: '5.1', scenario: 'cancel', backing: 'thp', finds: [], note: 'unmap the table before the block' },
  { profile: '5.1', scenario: 'migrate', backing: 'thp', finds: [], note: '' },
  { profile: '5.1', scenario: 'thp-churn', backing: 'thp', finds: [], note: '' },
  { profile: '5.1', scenario: 'teardown', backing: 'anon', finds: [], note: '' },
  // The arm64 design (README, "The arm64 design").
  { profile: '5.18-rc', scenario: 'log-toggle', backing: 'thp', finds: ['lock-held'], note: 'a block split under the read side (exclusive stores)', modern: true },
  { profile: '6.2', scenario: 'notifier-storm', backing: 'anon', finds: ['frame-use-after-free', 'stage2-host-coherent', 'frame-conservation', 'shadow-equal'], note: 'the change_pte window (zap and CoW on one page)', modern: true },
  { profile: '6.10', scenario: 'notifier-storm', backing: 'anon', finds: [], note: 'no change_pte', modern: true },
  { profile: '6.10', scenario: 'log-toggle', backing: 'thp', finds: ['no-block-while-logging', 'migration-equal'], note: 'the stale fault granule', modern: true },
  { profile: '6.10', scenario: 'log-toggle', backing: 'thp', extra: ['--fix', 'relax-checks-granule'], finds: [], note: 'with the candidate fix', modern: true },
];

function parseArgs() {
  const a = process.argv.slice(2);
  const o = { seeds: 10, json: null, only: null, modern: false };
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--seeds' && /^\d+$/.test(a[i + 1] ?? '') && Number(a[i + 1]) > 0) o.seeds = Number(a[++i]);
    else if (a[i] === '--json' && a[i + 1]) o.json = a[++i];
    else if (a[i] === '--only' && a[i + 1]) o.only = a[++i];
    else if (a[i] === '--modern') o.modern = true;
    else {
      console.error(`profile-table: unknown or bad flag '${a[i]}'; accepted: --seeds N (N >= 1), --json FILE, --only PROFILE, --modern (the arm64 rows only)`);
      process.exit(2);
    }
  }
  return o;
}

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  return s.length === 0 ? null : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function runOnce(dir, row, mode, seed) {
  const file = join(dir, `${row.profile}-${row.scenario}-${mode}-${seed}.json`);
  const args = [CLI, 'run', '--profile', row.profile, '--scenario', row.scenario, '--backing', row.backing, '--vcpus', '2', '--guest-mem', '8M', '--mode', mode, '--seed', String(seed), '--json', file, '--quiet', ...(row.extra ?? [])];
  if (mode === 'sim') args.push('--ops', String(SIM_OPS));
  else args.push('--duration', `${THREADS_MS}ms`, '--watchdog', '8s');
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 600_000 });
  let rep = null;
  try {
    rep = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return { code: r.status, invariants: [], ms: null, error: (r.stderr || r.stdout || 'no report').split('\n')[0] };
  }
  return { code: rep.exitCode, invariants: [...new Set(rep.violations.map((v) => v.invariant))], messages: rep.violations.map((v) => v.message), first: rep.violations[0]?.invariant ?? null, ms: rep.elapsedMs, error: rep.error };
}

function cell(results, row, mode) {
  const budget = mode === 'sim' ? null : THREADS_MS;
  if (row.finds.length === 0) {
    const bad = results.filter((x) => x.code !== 0 && !(x.code === 1 && row.allow && x.invariants.every((i) => row.allow.includes(i))));
    const allowed = results.filter((x) => x.code === 1 && row.allow && x.invariants.every((i) => row.allow.includes(i)));
    return `${bad.length === 0 ? 'clean' : `NOT CLEAN ${bad.length}`}/${results.length}${allowed.length ? ` (${allowed.length} with ${row.allow.join(', ')} only)` : ''}${bad.length ? `: ${bad.map((x) => x.first ?? x.error).join(', ')}` : ''}`;
  }
  const caught = results.filter((x) => x.code === 1 && (x.invariants.some((i) => row.finds.includes(i)) || (row.findsMessage && (x.messages ?? []).some((m) => row.findsMessage.test(m)))));
  const other = results.filter((x) => x.code !== 0 && !caught.includes(x));
  const times = results.map((x) => (caught.includes(x) ? x.ms : budget ?? x.ms ?? 0));
  const firsts = {};
  for (const x of caught) firsts[x.first] = (firsts[x.first] ?? 0) + 1;
  const med = caught.length > results.length / 2 ? `${(median(times) / 1000).toFixed(2)} s` : '>budget';
  return `${caught.length}/${results.length}, ${med}${other.length ? ` (+${other.length} other: ${other.map((x) => x.first ?? x.error).join(', ')})` : ''}; first: ${Object.entries(firsts).map(([k, v]) => `${k} ${v}`).join(', ')}`;
}

const o = parseArgs();
const dir = mkdtempSync(join(tmpdir(), 's2stress-profiles-'));
const load0 = loadavg();
const t0 = Date.now();
const out = [];
const lines = [
  '| profile | scenario, backing | what it shows | sim: caught/seeds, median | threads: caught/seeds, median |',
  '|---|---|---|---|---|',
];
for (const row of ROWS) {
  if (o.only && row.profile !== o.only) continue;
  if (o.modern && !row.modern) continue;
  const res = {};
  for (const mode of ['sim', 'threads']) {
    res[mode] = [];
    for (let seed = 1; seed <= o.seeds; seed++) res[mode].push(runOnce(dir, row, mode, seed));
  }
  const name = `\`${row.profile}\`${row.extra ? ` \`${row.extra.join(' ')}\`` : ''}`;
  const line = `| ${name} | ${row.scenario}, ${row.backing} | ${row.note} | ${cell(res.sim, row, 'sim')} | ${cell(res.threads, row, 'threads')} |`;
  lines.push(line);
  console.error(line);
  out.push({ ...row, results: res });
}
rmSync(dir, { recursive: true, force: true });
const load1 = loadavg();
const meta = `s2stress profile table, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, node ${process.version}; seeds 1..${o.seeds}; sim ${SIM_OPS} accesses, threads ${THREADS_MS / 1000} s; 2 vCPUs, 8 MiB guest; wall ${Math.round((Date.now() - t0) / 1000)} s; load average ${load0[0].toFixed(1)} -> ${load1[0].toFixed(1)}`;
console.log(meta);
console.log('');
console.log(lines.join('\n'));
if (o.json) writeFileSync(o.json, JSON.stringify({ meta, rows: out }, null, 2));
