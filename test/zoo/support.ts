/**
 * Shared by the detection suite's two files (sim: zoo-sim.test.ts; threads:
 * zoo-threads.test.ts), which vitest runs side by side.
 */
import { expect, it } from 'vitest';
import { BUGS } from '../../src/profiles.js';
import { zooArgs } from '../../stress/zoo.js';
import { why } from '../harness/util.js';
import { parseRunArgs } from '../../stress/options.js';
import { runSim } from '../../stress/simrun.js';
import { runThreads } from '../../stress/run.js';
import type { ZooBudget } from '../../stress/zoo.js';
import type { Report } from '../../stress/report.js';

export const SIM_SEEDS = [1, 2, 3, 4, 5];
export const THREADS_SEEDS = [1, 2, 3, 4, 5];
export const BUDGET: ZooBudget = { seeds: 5, simOps: 40_000, threadsMs: 6000, vcpus: 2, guestMem: '8M' };

export async function go(args: string[]): Promise<Report> {
  const o = parseRunArgs(args);
  return o.mode === 'sim' ? runSim(o) : runThreads(o);
}

export function withoutBug(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--bug') {
      i++;
      continue;
    }
    out.push(args[i]);
  }
  return out;
}

/**
 * A clean sim run, once per configuration: many defects share a target
 * (a sim run is the same run every time, so its verdict can be reused).
 */
const cleanSim = new Map<string, Promise<Report>>();
export function cleanSimRun(args: string[]): Promise<Report> {
  const key = args.join(' ');
  let r = cleanSim.get(key);
  if (!r) {
    r = go(args);
    cleanSim.set(key, r);
  }
  return r;
}

/**
 * The sim-mode detection tests of the defects of index `part` mod 2 (two
 * files, run side by side): each defect reported by the invariant expected
 * to catch it within SIM_SEEDS, and its clean profile passing the seed and
 * configuration that caught it.
 */
export function defineSimDetection(part: number): void {
  for (const bug of BUGS.filter((_, i) => i % 2 === part)) {
    const accepted = [bug.expected, ...(bug.also ?? [])];
    it(`${bug.name} is caught in sim mode by ${accepted.join(' or ')} within seeds ${SIM_SEEDS.join(',')}; its clean profile passes the same seed`, async () => {
      let caught: Report | null = null;
      const tried: number[] = [];
      for (const seed of SIM_SEEDS) {
        tried.push(seed);
        const args = zooArgs(bug.name, 'sim', seed, BUDGET);
        const r = await go(args);
        if (r.result === 'fail') {
          caught = r;
          const clean = await cleanSimRun(withoutBug(args));
          expect(clean.result, `the clean profile without ${bug.name} must pass the same configuration: ${why(clean)}`).toBe('pass');
          break;
        }
      }
      expect(caught, `${bug.name} not caught in sim seeds ${tried.join(',')}`).not.toBeNull();
      expect(caught!.exitCode, why(caught!)).toBe(1);
      const invs = caught!.violations.map((v) => v.invariant);
      expect(invs.some((i) => accepted.includes(i)), `${bug.name}: ${why(caught!)}`).toBe(true);
    });
  }

}
