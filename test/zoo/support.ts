/**
 * Shared by the detection suite's two files (sim: zoo-sim.test.ts; threads:
 * zoo-threads.test.ts), which vitest runs side by side.
 */
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
