/**
 * Sim mode against threads mode, single vCPU, side by side in one run:
 * the same scenario, seed and number of guest accesses, alternating the
 * modes so that drift on a shared machine hits both alike. The figure is the
 * ratio of accesses per second (DESIGN.md section 7: sim at least a tenth of
 * threads).
 */
import { parseRunArgs } from '../stress/options.js';
import { runThreads } from '../stress/run.js';
import { runSim } from '../stress/simrun.js';

export interface SimSpeedRow {
  mode: string;
  accessesPerSec: number[];
  median: number;
  /** median of the per-round ratios to threads mode (threads: 1) */
  ratio: number;
}

export interface SimSpeedResult {
  scenario: string;
  ops: number;
  rounds: number;
  rows: SimSpeedRow[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export async function simSpeedBench(o: { ops: number; rounds: number; seed: number; scenario?: string; guestMem?: string }): Promise<SimSpeedResult> {
  const scenario = o.scenario ?? 'migrate';
  const base = ['--scenario', scenario, '--vcpus', '1', '--guest-mem', o.guestMem ?? '16M', '--ops', String(o.ops), '--seed', String(o.seed), '--no-lock-stats'];
  const modes: { name: string; args: string[] }[] = [
    { name: 'threads', args: ['--mode', 'threads'] },
    { name: 'sim random', args: ['--mode', 'sim', '--sched', 'random'] },
    { name: 'sim pct', args: ['--mode', 'sim', '--sched', 'pct'] },
  ];
  const rates: number[][] = modes.map(() => []);
  for (let r = 0; r < o.rounds; r++) {
    for (let i = 0; i < modes.length; i++) {
      const opts = parseRunArgs([...base, ...modes[i].args]);
      opts.quiet = true;
      const rep = opts.mode === 'sim' ? await runSim(opts) : await runThreads(opts);
      if (rep.result !== 'pass') throw new Error(`bench run failed (${modes[i].name}): ${rep.violations[0]?.message ?? rep.error}`);
      rates[i].push(rep.counters.accesses / (rep.elapsedMs / 1000));
    }
  }
  const rows = modes.map((m, i) => ({
    mode: m.name,
    accessesPerSec: rates[i],
    median: median(rates[i]),
    ratio: median(rates[i].map((x, r) => x / rates[0][r])),
  }));
  return { scenario, ops: o.ops, rounds: o.rounds, rows };
}

export function formatSimSpeed(r: SimSpeedResult): string {
  const lines = [`sim vs threads, 1 vCPU, scenario ${r.scenario}, ${r.ops} accesses per run, ${r.rounds} rounds (target: sim >= 0.1x threads)`];
  for (const row of r.rows) {
    lines.push(`  ${row.mode.padEnd(11)} ${Math.round(row.median).toString().padStart(9)} accesses/s   ratio ${row.ratio.toFixed(3)}x${row.mode === 'threads' ? '' : row.ratio >= 0.1 ? '  (meets 0.1x)' : '  (MISSES 0.1x)'}`);
  }
  return lines.join('\n');
}
