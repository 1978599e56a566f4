#!/usr/bin/env node
/**
 * Exit loop: many short s2stress runs under load, each of which must end
 * within its budget plus 10 s, with the exit code its report gives.
 *
 *   node scripts/exit-loop.mjs [--runs N] [--jobs J] [--seed S] [--allowance SECONDS] [--no-load]
 *
 * Runs a seeded mix of modes, scenarios, backings, profiles and bugs, with
 * and without --json and --quiet, J at a time, while a long s2stress run
 * goes on in the background as load. A run's budget is its --duration
 * (threads mode; 0 in sim mode) plus an allowance for starting the workers,
 * the run's own work (a sim run's --ops, a threads run's wait for its first
 * migration) and shutdown: 120 s by default, for a 2-core machine shared
 * with a load average of 30 or more, where a run that takes 3 s alone takes
 * a minute. The exit itself is measured apart: the time from the verdict on
 * stdout to the end of the process. Fails (exit 1) if a run exceeds its
 * budget plus 10 s, takes more than 10 s from its verdict to its end, exits
 * with a code other than its report's, or was ended by the exit backstop
 * (Node's own exit stalled). Prints the count, the largest overrun
 * of the budget, the largest time from verdict to exit, and the load.
 * Needs `npm run build` (npm run exit-loop builds first).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { loadavg, tmpdir, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'stress', 'cli.js');
const SLACK_MS = 10_000;

function args() {
  const a = process.argv.slice(2);
  const o = { runs: 300, jobs: 2, seed: 1, load: true, allowanceMs: 120_000 };
  for (let i = 0; i < a.length; i++) {
    const need = () => {
      const v = a[++i];
      if (v === undefined || !/^\d+$/.test(v)) {
        console.error(`exit-loop: ${a[i - 1]} takes a whole number`);
        process.exit(2);
      }
      return Number(v);
    };
    if (a[i] === '--runs') o.runs = need();
    else if (a[i] === '--jobs') o.jobs = Math.max(1, need());
    else if (a[i] === '--seed') o.seed = need();
    else if (a[i] === '--allowance') o.allowanceMs = need() * 1000;
    else if (a[i] === '--no-load') o.load = false;
    else {
      console.error(`exit-loop: unknown flag '${a[i]}'; accepted: --runs N --jobs J --seed S --allowance SECONDS --no-load`);
      process.exit(2);
    }
  }
  return o;
}

/** xorshift32, seeded: the same mix for the same --seed. */
function rng(seed) {
  let x = seed | 0 || 0x9e3779b9;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

const pick = (r, xs) => xs[r(xs.length)];

function runSpec(r, i, dir, allowanceMs) {
  const mode = r(5) < 3 ? 'threads' : 'sim';
  const scenario = pick(r, ['mixed', 'migrate', 'cancel', 'notifier-storm', 'log-toggle', 'selftest-dirty-log']);
  const backing = pick(r, ['anon', 'thp', 'hugetlb', 'mixed']);
  const a = ['run', '--mode', mode, '--scenario', scenario, '--backing', backing, '--vcpus', String(1 + r(3)), '--guest-mem', pick(r, ['8M', '16M']), '--seed', String(i + 1)];
  let durationMs = 0;
  if (mode === 'threads') {
    durationMs = pick(r, [200, 500, 1000, 2000]);
    a.push('--duration', `${durationMs}ms`);
  } else a.push('--ops', String(2000 + r(4) * 1000));
  if (r(6) === 0) a.push('--bug', pick(r, ['no-mark-dirty', 'leak-on-dissolve', 'harvest-no-wp', 'unlocked-change-pte']));
  const json = r(2) === 0 ? join(dir, `run-${i}.json`) : null;
  if (json) a.push('--json', json);
  if (r(2) === 0) a.push('--quiet');
  return { args: a, json, budgetMs: durationMs + allowanceMs };
}

/** Children alive now: stopped if this script is interrupted. */
const live = new Set();

function runOne(spec) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI, ...spec.args], { env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let out = '';
    let err = '';
    let verdictAt = -1;
    child.stdout.on('data', (d) => {
      out += d;
      if (verdictAt < 0 && /^s2stress (PASS|FAIL|INTERRUPTED|pass|fail|interrupted)/m.test(out)) verdictAt = performance.now();
    });
    child.stderr.on('data', (d) => (err += d));
    // Never wait for ever: far past the budget the run is killed (and fails).
    const killer = setTimeout(() => child.kill('SIGKILL'), spec.budgetMs + SLACK_MS + 60_000);
    child.on('exit', (code, signal) => {
      live.delete(child);
      clearTimeout(killer);
      const wall = performance.now() - t0;
      resolve({ spec, code, signal, wall, exitLatency: verdictAt >= 0 ? performance.now() - verdictAt : null, load: loadavg()[0], out, err });
    });
  });
}

/** A long run in the background as load, restarted when it ends. */
function backgroundLoad() {
  let child = null;
  let stopped = false;
  const startOne = () => {
    if (stopped) return;
    child = spawn(process.execPath, [CLI, 'run', '--duration', '10m', '--vcpus', '2', '--guest-mem', '64M', '--seed', '99', '--quiet'], { stdio: 'ignore', env: { ...process.env, CI: 'true' } });
    live.add(child);
    const me = child;
    child.on('exit', () => {
      live.delete(me);
      startOne();
    });
  };
  startOne();
  return () => {
    stopped = true;
    if (child) child.kill('SIGTERM');
  };
}

async function main() {
  const o = args();
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      for (const c of live) c.kill('SIGKILL');
      console.log(`exit-loop: ${sig}: stopped`);
      process.exit(130);
    });
  }
  if (!existsSync(CLI)) {
    console.error(`exit-loop: ${CLI} is missing: run \`npm run build\` first`);
    process.exit(2);
  }
  const dir = mkdtempSync(join(tmpdir(), 's2exit-'));
  const r = rng(o.seed);
  const specs = Array.from({ length: o.runs }, (_, i) => runSpec(r, i, dir, o.allowanceMs));
  const load0 = loadavg();
  const stopLoad = o.load ? backgroundLoad() : () => {};
  console.log(`exit-loop: ${o.runs} runs, ${o.jobs} at a time, seed ${o.seed}, ${o.load ? 'a background run as load' : 'no background load'}; ${cpus().length} cores, load average ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const results = [];
  const failures = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < specs.length) {
      const spec = specs[next++];
      const res = await runOne(spec);
      results.push(res);
      const problems = [];
      if (res.wall > spec.budgetMs + SLACK_MS) problems.push(`took ${(res.wall / 1000).toFixed(1)} s, budget ${(spec.budgetMs / 1000).toFixed(1)} s + 10 s`);
      if (res.exitLatency !== null && res.exitLatency > SLACK_MS) problems.push(`${(res.exitLatency / 1000).toFixed(1)} s from its verdict to its end`);
      if (/did not exit within/.test(res.err) || res.code === 137 || res.signal) problems.push(`ended by ${res.signal ?? 'the exit backstop'} (${res.code})`);
      let detail = `verdict to exit ${res.exitLatency === null ? '-' : `${(res.exitLatency / 1000).toFixed(2)} s`}, load ${res.load.toFixed(1)}`;
      if (spec.json) {
        try {
          const rep = JSON.parse(readFileSync(spec.json, 'utf8'));
          detail += `, start-up ${(rep.startupMs / 1000).toFixed(1)} s, run ${(rep.elapsedMs / 1000).toFixed(1)} s`;
          if (rep.exitCode !== res.code) problems.push(`exit ${res.code}, its report says ${rep.exitCode}`);
        } catch (e) {
          problems.push(`no readable report: ${e.message}`);
        }
      }
      if (![0, 1, 3].includes(res.code)) problems.push(`exit code ${res.code}`);
      if (problems.length) {
        failures.push({ args: spec.args.join(' '), problems, tail: (res.out + res.err).slice(-600) });
        console.log(`  FAIL s2stress ${spec.args.join(' ')}: ${problems.join('; ')} (${detail})`);
      }
      if (results.length % 25 === 0) {
        console.log(`  ${results.length}/${o.runs} runs, ${failures.length} failed, load average ${loadavg()[0].toFixed(2)}`);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.jobs }, worker));
  } finally {
    stopLoad();
  }
  const load1 = loadavg();
  const overruns = results.map((x) => x.wall - x.spec.budgetMs);
  const latencies = results.map((x) => x.exitLatency).filter((x) => x !== null);
  const codes = {};
  for (const x of results) codes[x.code] = (codes[x.code] ?? 0) + 1;
  const walls = results.map((x) => x.wall).sort((a, b) => a - b);
  console.log(
    [
      `exit-loop: ${results.length} runs in ${((performance.now() - t0) / 60000).toFixed(1)} min, ${failures.length} failed`,
      `  exit codes: ${Object.entries(codes).map(([c, n]) => `${c}: ${n}`).join(', ')}`,
      `  wall time: median ${(walls[Math.floor(walls.length / 2)] / 1000).toFixed(1)} s, max ${(walls[walls.length - 1] / 1000).toFixed(1)} s`,
      `  largest overrun of the budget (duration + ${o.allowanceMs / 1000} s): ${(Math.max(...overruns) / 1000).toFixed(1)} s (allowed: 10 s)`,
      `  verdict to exit: max ${(Math.max(...latencies) / 1000).toFixed(2)} s, median ${(latencies.sort((a, b) => a - b)[Math.floor(latencies.length / 2)] / 1000).toFixed(2)} s, over ${latencies.length} runs that printed one`,
      `  load average (1 min) seen at the end of a run: max ${Math.max(...results.map((x) => x.load)).toFixed(2)}`,
      `  load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${load1.map((x) => x.toFixed(2)).join(' ')}`,
    ].join('\n'),
  );
  for (const f of failures.slice(0, 10)) console.log(`\n  s2stress ${f.args}\n    ${f.problems.join('; ')}\n    ${f.tail.replace(/\n/g, '\n    ')}`);
  rmSync(dir, { recursive: true, force: true });
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.error(`exit-loop: ${e?.stack ?? e}`);
  process.exit(3);
});
