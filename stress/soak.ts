/**
 * The sim-mode soak of the clean profile (`npm run soak:sim`): `fixed` over
 * thousands of seeds, spread over every scenario, backing and strategy,
 * several runs at once (one per core: a sim run keeps one actor running at a
 * time). Any violation or harness failure fails the soak and prints the
 * command that reruns that seed; the last line is a one-line summary.
 *
 *   node dist/stress/soak.js [--seeds N] [--first-seed S] [--ops N] [--jobs J] [--json FILE]
 *
 * `--bug NAME` soaks `fixed` with a defect instead: the soak must then fail
 * (a check that the soak can fail at all).
 */
import { availableParallelism, cpus, loadavg } from 'node:os';
import { writeFileSync } from 'node:fs';
import { ConfigError, PROFILES, type ProfileName } from '../src/config.js';
import { SCHEDULE_VERSION } from '../src/sim/sched.js';
import { parseRunArgs, profileLockKind } from './options.js';
import { SCENARIOS } from './scenarios.js';
import { runSim } from './simrun.js';
import { parseIntFlag } from './units.js';

export const SOAK_BACKINGS = ['anon', 'thp', 'hugetlb', 'mixed'] as const;
export const SOAK_SCHEDS = ['random', 'pct'] as const;
/** Guest accesses per seed (all vCPUs): a soak of 2000 seeds stays well under an hour on 2 cores. */
export const SOAK_OPS = 8_000;
export const SOAK_SEEDS = 2000;
/** Far from the seeds the tests and the kill-table measurements use. */
export const SOAK_FIRST_SEED = 100_001;

/**
 * The run flags of soak seed `seed`: scenario, backing and strategy cycle
 * so that every combination comes round every 56 seeds; vCPUs (2 or 3),
 * guest size (4 or 8 MiB), lock kind and PCT depth vary with the seed too.
 */
export function soakArgs(seed: number, ops: number, bugs: readonly string[] = [], profile: ProfileName = 'fixed'): string[] {
  // The 2014 line alternates its two spinlock kinds; the arm64 profiles take their rwlock.
  const spin = profileLockKind(profile) !== 'rwlock';
  const scenarios = SCENARIOS.map((s) => s.name);
  let k = seed;
  const scenario = scenarios[k % scenarios.length];
  k = Math.floor(k / scenarios.length);
  const backing = SOAK_BACKINGS[k % SOAK_BACKINGS.length];
  k = Math.floor(k / SOAK_BACKINGS.length);
  const sched = SOAK_SCHEDS[k % SOAK_SCHEDS.length];
  const h = Math.imul(seed, 0x9e3779b1) >>> 0;
  return [
    '--mode', 'sim', '--profile', profile, '--scenario', scenario, '--backing', backing, '--sched', sched,
    ...(sched === 'pct' ? ['--pct-depth', String(2 + (h % 3))] : []),
    '--vcpus', String(2 + ((h >>> 4) & 1)),
    '--guest-mem', (h >>> 5) & 1 ? '8M' : '4M',
    ...(spin ? ['--lock', (h >>> 6) & 1 ? 'tas' : 'ticket'] : []),
    '--ops', String(ops),
    '--seed', String(seed),
    '--quiet',
    ...bugs.flatMap((b) => ['--bug', b]),
  ];
}

interface SoakFailure {
  seed: number;
  result: string;
  message: string;
  rerun: string;
  /** The invariant reported first (or `harness`). */
  first: string;
}

function fmtWall(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export async function main(args: string[], io: { out(s: string): void; err(s: string): void }): Promise<number> {
  let seeds = SOAK_SEEDS;
  let first = SOAK_FIRST_SEED;
  let ops = SOAK_OPS;
  let jobs = availableParallelism();
  let json: string | null = null;
  const bugs: string[] = [];
  let profile: ProfileName = 'fixed';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = (): string => {
      const x = args[++i];
      if (x === undefined) throw new ConfigError(a, `${a} needs a value`);
      return x;
    };
    switch (a) {
      case '--seeds':
        seeds = parseIntFlag(a, v(), 1, 1_000_000);
        break;
      case '--first-seed':
        first = parseIntFlag(a, v(), 0, 0xffffffff - 1_000_000);
        break;
      case '--ops':
        ops = parseIntFlag(a, v(), 100, 100_000_000);
        break;
      case '--jobs':
        jobs = parseIntFlag(a, v(), 1, 64);
        break;
      case '--json':
        json = v();
        break;
      case '--bug':
        bugs.push(v());
        break;
      case '--profile': {
        const p = v();
        if (!(PROFILES as readonly string[]).includes(p)) throw new ConfigError(a, `--profile must be one of ${PROFILES.join('|')}, got '${p}'`);
        profile = p as ProfileName;
        break;
      }
      default:
        throw new ConfigError(a, `unknown flag '${a}' for the soak; accepted: --seeds N --first-seed S --ops N --jobs J --json FILE --bug NAME --profile NAME`);
    }
  }
  // Every configuration is checked before the first run starts.
  for (let s = first; s < first + Math.min(seeds, SCENARIOS.length * SOAK_BACKINGS.length * SOAK_SCHEDS.length); s++) parseRunArgs(soakArgs(s, ops, bugs, profile));
  const t0 = performance.now();
  const load0 = loadavg();
  const failures: SoakFailure[] = [];
  let next = first;
  let done = 0;
  let clean = 0;
  let steps = 0;
  let lastNote = t0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const seed = next++;
      if (seed >= first + seeds) return;
      const o = parseRunArgs(soakArgs(seed, ops, bugs, profile));
      const r = await runSim(o);
      done++;
      steps += r.schedule?.steps ?? 0;
      if (r.result === 'pass' && r.exitCode === 0) {
        clean++;
      } else {
        const message = r.error ?? r.violations.map((v) => `[${v.invariant}] ${v.message}`).join(' | ');
        failures.push({ seed, result: r.result, message, rerun: r.replay, first: r.error ? 'harness' : (r.violations[0]?.invariant ?? r.result) });
        io.err(`soak:sim FAIL seed ${seed}: ${message}\n  rerun: ${r.replay}`);
      }
      const now = performance.now();
      if (now - lastNote > 30_000) {
        lastNote = now;
        io.err(`soak:sim ${done}/${seeds} seeds, ${failures.length} failed, ${fmtWall(now - t0)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, seeds)) }, () => worker()));
  const wallMs = performance.now() - t0;
  const load1 = loadavg();
  const byFirst: Record<string, number> = {};
  for (const f of failures) byFirst[f.first] = (byFirst[f.first] ?? 0) + 1;
  const firsts = Object.entries(byFirst).map(([k, n]) => `${k} ${n}`).join(', ');
  const summary = `soak:sim ${failures.length === 0 ? 'PASS' : 'FAIL'}: ${seeds} seeds (${first}..${first + seeds - 1}), ${clean} clean, ${failures.length} failed${firsts ? ` (first reported: ${firsts})` : ''}; profile ${profile}${bugs.length ? ` + bugs ${bugs.join(',')}` : ''}, ${SCENARIOS.length} scenarios x ${SOAK_BACKINGS.length} backings x ${SOAK_SCHEDS.length} strategies, ${ops} accesses per seed, ${steps} scheduling steps; wall ${fmtWall(wallMs)} with ${jobs} at once on ${cpus().length} cores, load average ${load0[0].toFixed(1)} -> ${load1[0].toFixed(1)}`;
  if (json) {
    writeFileSync(json, JSON.stringify({ summary, profile, seeds, first, ops, jobs, clean, failures, byFirst, wallMs: Math.round(wallMs), steps, scheduleVersion: SCHEDULE_VERSION, load: { start: load0, end: load1 } }, null, 2));
  }
  io.out(summary);
  return failures.length === 0 ? 0 : 1;
}

const invoked = process.argv[1] && /soak\.(js|ts)$/.test(process.argv[1]);
if (invoked) {
  main(process.argv.slice(2), { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') }).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      if (e instanceof ConfigError) {
        process.stderr.write(`soak:sim: ${e.message}\n`);
        process.exitCode = 2;
      } else {
        process.stderr.write(`soak:sim: harness failure: ${(e as Error).message}\n`);
        process.exitCode = 3;
      }
    },
  );
}
