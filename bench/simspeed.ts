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
import { formatBytes } from '../src/config.js';

export interface SimSpeedRow {
  mode: string;
  accessesPerSec: number[];
  median: number;
  /** median of the per-round ratios to threads mode (threads: 1) */
  ratio: number;
  /** sim modes: scheduling steps and actor switches per second of the run (medians); null in threads mode */
  stepsPerSec: number | null;
  switchesPerSec: number | null;
  /** sim modes: the CPU the actors were pinned to in the last round (--sim-cpu), null if none; absent in older results */
  cpu?: number | null;
  /**
   * The events races are made of, per second (medians): stage-2 faults, MMU
   * notifier invalidations, migrations (completed or cancelled); and each
   * one's ratio to threads mode (median of the rounds'). The same seed does
   * far more of them per guest access in sim mode than in threads mode, so
   * accesses per second alone undersells the sim. Absent in older results.
   */
  events?: { name: SimEvent; perSec: number; ratio: number }[];
}

export type SimEvent = 'faults' | 'invalidations' | 'migrations';
const EVENTS: readonly SimEvent[] = ['faults', 'invalidations', 'migrations'];

function eventCount(c: Record<string, number>, e: SimEvent): number {
  return e === 'migrations' ? (c.migrations ?? 0) + (c.cancels ?? 0) : (c[e] ?? 0);
}

/** The row of sim random with --sim-cpu off: a comparison, no target of its own. */
export const UNPINNED = 'sim random, unpinned';

/**
 * Campaign throughput: seeds of the default sim configuration (`s2stress
 * run --mode sim --seed N`, nothing else) run one after the other in this
 * process, as one campaign job runs them, with the CPU time of every thread.
 */
export interface SeedRate {
  /** the run flags besides --seed (empty: the defaults) */
  args: string[];
  config: { scenario: string; vcpus: number; guestMem: number; ops: number };
  seeds: number[];
  wallMs: number[];
  /** user + system CPU time of the whole process (main thread and workers) per seed */
  cpuMs: number[];
  steps: number[];
  switches: number[];
  seedsPerCpuMinute: number;
  seedsPerWallMinute: number;
}

export interface SimSpeedResult {
  scenario: string;
  ops: number;
  rounds: number;
  rows: SimSpeedRow[];
  /** absent in older results */
  seedRate?: SeedRate | null;
}

const fmtM = (x: number): string => `${(x / 1e6).toFixed(2)}M`;
const fmtK = (x: number): string => `${(x / 1e3).toFixed(1)}k`;
const fmtRate = (x: number): string => (x >= 1e4 ? fmtK(x) : x >= 100 ? String(Math.round(x)) : x.toFixed(1));

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
    // The same run with its actor threads free to move between cores (--sim-cpu off): what pinning gains.
    { name: UNPINNED, args: ['--mode', 'sim', '--sched', 'random', '--sim-cpu', 'off'] },
    { name: 'sim pct', args: ['--mode', 'sim', '--sched', 'pct'] },
  ];
  const rates: number[][] = modes.map(() => []);
  const steps: number[][] = modes.map(() => []);
  const switches: number[][] = modes.map(() => []);
  const cpus: (number | null)[] = modes.map(() => null);
  const events: number[][][] = modes.map(() => EVENTS.map(() => []));
  for (let r = 0; r < o.rounds; r++) {
    for (let i = 0; i < modes.length; i++) {
      const opts = parseRunArgs([...base, ...modes[i].args]);
      opts.quiet = true;
      const rep = opts.mode === 'sim' ? await runSim(opts) : await runThreads(opts);
      if (rep.result !== 'pass') throw new Error(`bench run failed (${modes[i].name}): ${rep.violations[0]?.message ?? rep.error}`);
      const sec = rep.elapsedMs / 1000;
      rates[i].push(rep.counters.accesses / sec);
      EVENTS.forEach((e, k) => events[i][k].push(eventCount(rep.counters, e) / sec));
      if (rep.schedule) {
        steps[i].push(rep.schedule.steps / sec);
        switches[i].push(rep.schedule.switches / sec);
        cpus[i] = rep.pinnedCpu ?? null;
      }
    }
  }
  const rows = modes.map((m, i) => ({
    mode: m.name,
    accessesPerSec: rates[i],
    median: median(rates[i]),
    ratio: median(rates[i].map((x, r) => x / rates[0][r])),
    stepsPerSec: steps[i].length ? median(steps[i]) : null,
    switchesPerSec: switches[i].length ? median(switches[i]) : null,
    cpu: cpus[i],
    events: EVENTS.map((name, k) => ({
      name,
      perSec: median(events[i][k]),
      ratio: median(events[i][k].map((x, r) => (events[0][k][r] > 0 ? x / events[0][k][r] : Infinity))),
    })),
  }));
  return { scenario, ops: o.ops, rounds: o.rounds, rows };
}

/**
 * Seeds per CPU-minute of the default sim configuration: `seeds` runs of
 * `s2stress run --mode sim --seed N` plus `extra` flags (none: the defaults),
 * one after the other in this process. CPU time is the process's (every
 * worker thread's included), so the figure says how many seeds a campaign
 * gets per core-minute.
 */
export async function seedRateBench(o: { seeds: number[]; extra?: string[] }): Promise<SeedRate> {
  const extra = o.extra ?? [];
  const wallMs: number[] = [];
  const cpuMs: number[] = [];
  const steps: number[] = [];
  const switches: number[] = [];
  let config: SeedRate['config'] | null = null;
  for (const seed of o.seeds) {
    const opts = parseRunArgs(['--mode', 'sim', ...extra, '--seed', String(seed)]);
    opts.quiet = true;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const rep = await runSim(opts);
    const c = process.cpuUsage(c0);
    wallMs.push(performance.now() - t0);
    cpuMs.push((c.user + c.system) / 1000);
    if (rep.error) throw new Error(`seed ${seed}: the run did not complete: ${rep.error}`);
    steps.push(rep.schedule?.steps ?? 0);
    switches.push(rep.schedule?.switches ?? 0);
    config = { scenario: opts.scenario, vcpus: opts.vcpus, guestMem: opts.guestMem, ops: opts.ops ?? 0 };
  }
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  return {
    args: extra,
    config: config!,
    seeds: o.seeds,
    wallMs,
    cpuMs,
    steps,
    switches,
    seedsPerCpuMinute: o.seeds.length / (sum(cpuMs) / 60_000),
    seedsPerWallMinute: o.seeds.length / (sum(wallMs) / 60_000),
  };
}

export function formatSimSpeed(r: SimSpeedResult): string {
  const lines = [`sim vs threads, 1 vCPU, scenario ${r.scenario}, ${r.ops} accesses per run, ${r.rounds} rounds (target: sim >= 0.1x threads)`];
  for (const row of r.rows) {
    const sched = row.stepsPerSec === null || row.switchesPerSec === null ? '' : `   ${fmtM(row.stepsPerSec)} steps/s, ${fmtK(row.switchesPerSec)} switches/s (a switch every ${(1e6 / row.switchesPerSec).toFixed(1)} us)`;
    const verdict = row.mode === 'threads' || row.mode === UNPINNED ? '' : row.ratio >= 0.1 ? '  (meets 0.1x)' : '  (MISSES 0.1x)';
    const pin = row.cpu != null ? `, actors on CPU ${row.cpu}` : '';
    lines.push(`  ${row.mode.padEnd(20)} ${Math.round(row.median).toString().padStart(9)} accesses/s   ratio ${row.ratio.toFixed(3)}x${verdict}${sched}${pin}`);
    if (row.events) {
      const ev = row.events.map((e) => `${fmtRate(e.perSec)} ${e.name}/s${row.mode === 'threads' ? '' : ` (${Number.isFinite(e.ratio) ? e.ratio.toFixed(2) : 'inf'}x)`}`).join(', ');
      lines.push(`  ${''.padEnd(20)} ${ev}`);
    }
  }
  const sr = r.seedRate;
  if (sr) {
    const cfg = `${sr.config.scenario}, ${sr.config.vcpus} vCPUs, ${formatBytes(sr.config.guestMem)}, ${sr.config.ops} accesses${sr.args.length ? ` (${sr.args.join(' ')})` : ' (the defaults)'}`;
    lines.push(
      `campaign throughput, sim random, ${cfg}, seeds ${sr.seeds.join(',')} one after the other:`,
      `  ${sr.seedsPerCpuMinute.toFixed(2)} seeds per CPU-minute (every thread's CPU time), ${sr.seedsPerWallMinute.toFixed(2)} per minute of wall time; per seed: ` +
        sr.seeds.map((s, i) => `${(sr.wallMs[i] / 1000).toFixed(1)} s wall / ${(sr.cpuMs[i] / 1000).toFixed(1)} s CPU, ${fmtM(sr.steps[i])} steps, ${fmtK(sr.switches[i])} switches`).join('; '),
    );
  }
  return lines.join('\n');
}
