/** Helpers for tests that run the real harness (workers load dist/: `npm test` builds first). */
import { parseRunArgs, type RunOptions } from '../../stress/options.js';
import { runThreads } from '../../stress/run.js';
import { runSim } from '../../stress/simrun.js';
import type { Report } from '../../stress/report.js';

export function opts(args: string[]): RunOptions {
  return parseRunArgs(args);
}

export async function run(args: string[]): Promise<Report> {
  const o = opts(args);
  return o.mode === 'sim' ? runSim(o) : runThreads(o);
}

/** Run seeds in order until one fails; returns the failing report (or null) and the seeds tried. */
export async function firstFailure(args: string[], seeds: number[]): Promise<{ report: Report | null; tried: number; ms: number[] }> {
  const ms: number[] = [];
  let tried = 0;
  for (const seed of seeds) {
    tried++;
    const r = await run([...args, '--seed', String(seed)]);
    ms.push(r.elapsedMs);
    if (r.result === 'fail') return { report: r, tried, ms };
  }
  return { report: null, tried, ms };
}

/** A one-line description of a report for assertion messages (the seed first). */
export function why(r: Report): string {
  return `seed ${r.config.seed}: ${r.result} ${r.error ?? ''} ${r.violations.map((v) => `[${v.invariant}] ${v.message}`).join(' | ')}\n  rerun: ${r.replay}`;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
}
