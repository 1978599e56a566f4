/**
 * `s2stress bench`: the performance figures of DESIGN.md section 7, each a
 * ratio measured side by side in one run (absolute times on shared machines
 * drift): mmu_lock against a bare compare-exchange + store pair, a TLB hit
 * against its bare Atomics, the 4 KiB fault path, the scaling table per lock
 * kind, and the cost of lock statistics on a contended run. Prints a human
 * summary and, with --json FILE, writes everything as JSON.
 */
import { writeFileSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { EAGER_SPLIT_PROFILE, eagerSplitBench, type EagerSplitResult } from './eagersplit.js';
import { ConfigError, LOCK_KINDS, type LockKind, formatBytes } from '../src/config.js';
import { parseDuration, parseFloatFlag, parseIntFlag, parseSize, formatDuration } from '../stress/units.js';
import { VERSION } from '../stress/report.js';
import { DEFAULT_HOLD_SAMPLE } from '../src/sync/lockstat.js';
import { BARE_PAIR, LOCK_SUBJECTS, faultBench, lockBench, lockConfigName, lockLabel, median, tlbBench, type FaultRow, type MicroOptions, type MicroRow } from './micro.js';
import { UNPINNED, formatSimSpeed, seedRateBench, simSpeedBench, type SimSpeedResult } from './simspeed.js';
import { SCALING_SCENARIO, overheadBench, scalingBench, type OverheadResult, type RunPoint, type ScalingOptions } from './scaling.js';
import { contendedBench, type ContendResult } from './contend.js';
import { ringBench, type RingBenchResult } from './ring.js';
import { DEFAULT_PROFILES, UPSTREAM, checkDirtyLogOptions, dirtyLogBench, parseProfilePair, parseVcpuMem, type DirtyLogResult } from './dirtylog.js';
import type { ProfileName } from '../src/config.js';
import { checkWritable, writeTextAtomic } from '../stress/files.js';
import { htmlBench } from '../stress/html.js';

type Io = { out(s: string): void; err(s: string): void };

export const SECTIONS = ['lock', 'tlb', 'fault', 'scaling', 'overhead', 'sim', 'dirty-log', 'eager-split', 'ring'] as const;
type Section = (typeof SECTIONS)[number];

/** DESIGN.md section 7. */
export const TARGETS = {
  lockRatio: 1.5,
  tlbRatio: 3,
  faultsPerSec: 1_000_000,
  statsOverhead: 0.1,
  simRatio: 0.1,
  /** Campaigns live on sim throughput: random at this much of threads mode (issue 15). */
  simRandomCampaign: 0.3,
} as const;

/**
 * vCPUs of the statistics-overhead runs: as many as cores (at least 2), so
 * that the run is contended but its vCPUs are not time-sharing cores (with
 * more, a FIFO lock handed to a vCPU that is not running idles until the
 * host schedules it, and the run-to-run spread of throughput, measured at
 * 4 vCPUs on 2 cores, 0.1x-5x, swamps a cost of a few percent).
 */
const DEFAULT_OVERHEAD_VCPUS = Math.max(2, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);

export const BENCH_USAGE = `s2stress bench [--quick] [--json FILE] [--markdown FILE] [--html FILE] [--only ${SECTIONS.join(',')}]
               [--duration TIME] [--vcpus 1,2,4,8] [--lock KIND[,KIND]|all] [--pairs N] [--overhead-vcpus N]
               [--contend-pairs N] [--rounds N] [--time TIME] [--seed N] [--guest-mem SIZE] [--write-pct P]
               [--vcpu-mem SIZE] [--profiles OLD,NEW] [--passes N]
  --html FILE    also write the results as one self-contained HTML page: scaling by vCPUs (accesses, faults,
                 contention), the dirty_log_perf_test sides, sim throughput
  --quick        short everything (for tests): tinybench 30ms x 1 round, 500ms runs, vCPUs 1,2, 1 pair;
                 dirty-log: --vcpu-mem 2M, --passes 1; ring: one density (10%), 3 rounds
  --duration     length of each threads-mode run (scaling point, overhead run); default 3s
  --lock         lock kinds of the scaling and contended sections (${LOCK_KINDS.join(', ')}; default all); the
                 uncontended section always measures every kind, and both sides of the rwlock
  --rounds/--time  micro benchmarks: rounds (ratio = median over rounds) and tinybench time per task
  --pairs        statistics-overhead runs: pairs of (on, off); default 10
  --overhead-vcpus  vCPUs of the statistics-overhead runs (a contended run); default: as many as cores, at least 2
  --contend-pairs   pairs of (on, off) rounds of the contended lock loop; default 10 (--quick 2)
  eager-split    logging on with and without eager splitting (6.10, THP, chunk 0 against 2M), the dirty-log
                 section's passes; --vcpus, --vcpu-mem, --passes and --seed apply
  --vcpu-mem     dirty-log section: guest bytes per vCPU (dirty_log_perf_test's -b), a multiple of 2M; default 16M
  --profiles     dirty-log section: the two profiles side by side, OLD,NEW (default ${DEFAULT_PROFILES.join(',')}; each
                 with its own mmu_lock); --vcpus and --seed apply; every page is written (not --write-pct)
  --passes       dirty-log section: measured passes per point after a warm-up pass, each populate, logging on,
                 2 iterations, logging off; a point runs that work, however long it takes (not --duration); default 5
  ring section:  KVM_GET_DIRTY_LOG against the dirty ring, pages harvested per second, 6.10, 2 vCPUs, 64M guest at
                 1%, 10%, 100% of RAM dirty per round, and 1G at 0.1%, 50 rounds each (one thread; no other flag applies)`;

export interface BenchOptions {
  quick: boolean;
  json: string | null;
  markdown: string | null;
  /** --html FILE: the results as one self-contained page (stress/html.ts). */
  html?: string | null;
  only: Section[];
  durationMs: number;
  vcpus: number[];
  locks: LockKind[];
  pairs: number;
  overheadVcpus: number;
  contendPairs: number;
  rounds: number;
  timeMs: number;
  seed: number;
  guestMem: number;
  writePct: number;
  /** dirty-log section: guest bytes per vCPU, and the two profiles (old, new). */
  vcpuMem: number;
  profiles: [ProfileName, ProfileName];
  passes: number;
}

export function parseBenchArgs(argv: readonly string[]): BenchOptions {
  const quick = argv.includes('--quick');
  const o: BenchOptions = {
    quick,
    json: null,
    markdown: null,
    html: null,
    only: [...SECTIONS],
    durationMs: quick ? 500 : 3000,
    vcpus: quick ? [1, 2] : [1, 2, 4, 8],
    locks: [...LOCK_KINDS],
    pairs: quick ? 1 : 10,
    overheadVcpus: DEFAULT_OVERHEAD_VCPUS,
    contendPairs: quick ? 2 : 10,
    rounds: quick ? 1 : 5,
    timeMs: quick ? 30 : 300,
    seed: 1,
    guestMem: 64 * 1024 * 1024,
    writePct: 50,
    vcpuMem: (quick ? 2 : 16) * 1024 * 1024,
    profiles: [...DEFAULT_PROFILES],
    passes: quick ? 1 : 5,
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    if (arg === '--quick') continue;
    let value: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const need = (): string => {
      if (value !== undefined) return value;
      const v = argv[++i];
      if (v === undefined) throw new ConfigError(arg, `${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--json':
        o.json = need();
        break;
      case '--markdown':
        o.markdown = need();
        break;
      case '--html':
        o.html = need();
        break;
      case '--only': {
        const parts = need().split(',').filter(Boolean);
        for (const p of parts) {
          if (!(SECTIONS as readonly string[]).includes(p)) throw new ConfigError(arg, `--only takes a list of ${SECTIONS.join(',')}, got '${p}'`);
        }
        o.only = parts as Section[];
        break;
      }
      case '--duration':
        o.durationMs = parseDuration(arg, need());
        break;
      case '--vcpus':
        o.vcpus = need()
          .split(',')
          .map((x) => parseIntFlag(arg, x, 1, 64));
        break;
      case '--lock': {
        const v = need();
        if (v === 'all') o.locks = [...LOCK_KINDS];
        else {
          const parts = v.split(',');
          for (const p of parts) {
            if (!(LOCK_KINDS as readonly string[]).includes(p)) throw new ConfigError(arg, `--lock takes one of ${LOCK_KINDS.join('|')}|all or a comma list of kinds, got '${p}'`);
          }
          o.locks = [...new Set(parts)] as LockKind[];
        }
        break;
      }
      case '--pairs':
        o.pairs = parseIntFlag(arg, need(), 1, 100);
        break;
      case '--overhead-vcpus':
        o.overheadVcpus = parseIntFlag(arg, need(), 1, 64);
        break;
      case '--contend-pairs':
        o.contendPairs = parseIntFlag(arg, need(), 1, 1000);
        break;
      case '--rounds':
        o.rounds = parseIntFlag(arg, need(), 1, 100);
        break;
      case '--time':
        o.timeMs = parseDuration(arg, need());
        break;
      case '--seed':
        o.seed = parseIntFlag(arg, need(), 0, 0xffffffff);
        break;
      case '--guest-mem':
        o.guestMem = parseSize(arg, need());
        break;
      case '--write-pct':
        o.writePct = parseFloatFlag(arg, need(), 0, 100);
        break;
      case '--vcpu-mem':
        o.vcpuMem = parseVcpuMem(arg, parseSize(arg, need()));
        break;
      case '--profiles':
        o.profiles = parseProfilePair(arg, need());
        break;
      case '--passes':
        o.passes = parseIntFlag(arg, need(), 1, 1000);
        break;
      default:
        throw new ConfigError(arg, `unknown flag '${arg}' for bench; accepted:\n${BENCH_USAGE}`);
    }
  }
  if (o.only.includes('dirty-log')) checkDirtyLogOptions({ vcpus: o.vcpus, vcpuMem: o.vcpuMem, profiles: o.profiles, passes: o.passes, seed: o.seed });
  return o;
}

export interface Machine {
  nproc: number;
  cpuModel: string;
  node: string;
  platform: string;
  date: string;
  loadavgStart: number[];
  loadavgEnd: number[];
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.slice(line.indexOf(':') + 1).trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

export interface Target {
  name: string;
  target: string;
  measured: string;
  met: boolean;
}

export interface BenchResults {
  tool: 's2stress bench';
  version: string;
  machine: Machine;
  options: BenchOptions;
  lock: { rows: MicroRow[]; holdSampleEvery: number } | null;
  tlb: { rows: MicroRow[] } | null;
  fault: { rows: FaultRow[] } | null;
  scaling: { scenario: string; durationMs: number; guestMem: string; cores: number; note: string; points: RunPoint[] } | null;
  overhead: (OverheadResult & { durationMs: number; scenario: string; contended: ContendResult[] }) | null;
  sim: SimSpeedResult | null;
  /** dirty_log_perf_test, old profile against new, with the upstream figures (bench/dirtylog.ts). */
  dirtyLog: DirtyLogResult | null;
  eagerSplit: EagerSplitResult | null;
  /** Bitmap harvest against the dirty ring (bench/ring.ts); absent in older results. */
  ring?: RingBenchResult | null;
  targets: Target[];
}

const fmtRatio = (x: number | null): string => (x === null ? '' : `${x.toFixed(2)}x`);
const fmtNs = (x: number): string => x.toFixed(1);
function fmtRate(x: number): string {
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return `${Math.round(x)}`;
}

/** Output style: plain text for the terminal, or Markdown (--markdown FILE, for bench/RESULTS.md). */
let markdown = false;

/** A table: first column left-aligned, the others right-aligned. */
export function table(head: string[], rows: string[][]): string {
  if (markdown) {
    const line = (cells: string[]): string => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
    return [line(head), `|${head.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`, ...rows.map(line)].join('\n');
  }
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [fmt(head), ...rows.map(fmt)].join('\n');
}

/** First and third quartiles of per-pair ratios, as "q1-q3" (the spread of the median's pairs). */
function quartiles(xs: number[]): string {
  const v = [...xs].sort((a, b) => a - b);
  const at = (q: number): number => {
    const i = q * (v.length - 1);
    const lo = Math.floor(i);
    return v[lo] + (v[Math.min(lo + 1, v.length - 1)] - v[lo]) * (i - lo);
  };
  return `${at(0.25).toFixed(3)}-${at(0.75).toFixed(3)}`;
}

function ci(c: [number, number]): string {
  return `${c[0].toFixed(3)}-${c[1].toFixed(3)}`;
}

/** A section title. */
function title(text: string): string {
  return markdown ? `### ${text}\n` : text;
}

function microTable(rows: MicroRow[]): string {
  return table(
    ['benchmark', 'ns/op', 'ratio', 'against'],
    rows.map((r) => [r.name, fmtNs(r.nsPerOp), fmtRatio(r.ratio), r.baseline ?? '(baseline)']),
  );
}

function scalingTable(points: RunPoint[]): string {
  const base = new Map<string, RunPoint>();
  for (const p of points) if (!base.has(p.lock) || p.vcpus < base.get(p.lock)!.vcpus) base.set(p.lock, p);
  return table(
    ['lock', 'vCPUs', 'accesses/s', 'faults/s', 'faults/s vs 1st', 'mmu_lock acq/s', 'contention', 'wait avg', 'wait p99', 'result'],
    points.map((p) => [
      p.lock,
      `${p.vcpus}`,
      fmtRate(p.accessesPerSec),
      fmtRate(p.faultsPerSec),
      fmtRatio(p.faultsPerSec / base.get(p.lock)!.faultsPerSec),
      p.lockAcqPerSec === null ? '' : fmtRate(p.lockAcqPerSec),
      p.contentionRatio === null ? '' : `${(p.contentionRatio * 100).toFixed(1)}%`,
      p.waitAvgNs === null ? '' : `${(p.waitAvgNs / 1000).toFixed(1)}us`,
      p.waitP99Ns === null ? '' : `${(p.waitP99Ns / 1000).toFixed(1)}us`,
      p.result + (p.error ? ` (${p.error})` : p.violations.length ? ` (${p.violations[0]})` : ''),
    ]),
  );
}

const fmtMs = (x: number | null): string => (x === null ? '' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const fmtPct = (x: number): string => `${(x * 100).toFixed(x > 0 && x < 0.001 ? 3 : 1)}%`;

/** The dirty-log section: the side-by-side table with the upstream figures, the details, the notes. */
function formatEagerSplit(e: EagerSplitResult): string[] {
  const f = (x: number | null, d = 2): string => (x === null ? '' : `${x.toFixed(d)}x`);
  return [
    title(
      `Eager page splitting (profile ${e.profile}, THP guest, ${e.vcpuMem} per vCPU, dirty_log_perf_test's passes: populate, logging on, iterations; ${e.passes} measured pass(es) after a warm-up; chunk 0 = off against 2M):`,
    ),
    table(
      ['vCPUs', 'logging on ms off', 'on', 'on/off', 'first-iteration faults off', 'on', 'on/off', 'first iteration ms off', 'on', 'on/off', 'splits by faults off', 'eager splits on'],
      e.rows.map((r) => [
        `${r.vcpus}`,
        r.off.enableMs.toFixed(2),
        r.on.enableMs.toFixed(2),
        f(r.enableRatio),
        r.off.firstFaults.toFixed(0),
        r.on.firstFaults.toFixed(0),
        f(r.firstFaultsRatio),
        r.off.firstMs.toFixed(1),
        r.on.firstMs.toFixed(1),
        f(r.firstMsRatio),
        `${r.off.faultSplits}`,
        `${r.on.eagerSplits}`,
      ]),
    ),
    `  each run: ${e.command}; splits are over the whole run (warm-up included)`,
  ];
}

function formatDirtyLog(d: DirtyLogResult): string[] {
  const o = d.profiles.old.profile;
  const n = d.profiles.new.profile;
  const pt = (side: 'old' | 'new', v: number) => d.points.find((p) => p.side === side && p.vcpus === v);
  const main = table(
    ['vCPUs', `dirty ms/iter ${o}`, n, `${o}/${n}`, `faults/s ${o}`, n, `wait/fault ns ${o}`, n, `faults waited ${o}`, n, `upstream ${UPSTREAM.old} s`, `${UPSTREAM.new} s`, `${UPSTREAM.old}/${UPSTREAM.new}`],
    d.rows.map((row) => {
      const a = pt('old', row.vcpus);
      const b = pt('new', row.vcpus);
      const rate = (p: typeof a): string => (p?.perf ? fmtRate(p.perf.faultsPerSec) : '');
      const wpf = (p: typeof a): string => (p ? p.faultLock.waitNsPerFault.toFixed(p.faultLock.waitNsPerFault < 10 ? 1 : 0) : '');
      const share = (p: typeof a): string => (p ? fmtPct(p.faultLock.waitedShare) : '');
      return [
        `${row.vcpus}`,
        fmtMs(row.oldMs),
        fmtMs(row.newMs),
        fmtRatio(row.ratio),
        rate(a),
        rate(b),
        wpf(a),
        wpf(b),
        share(a),
        share(b),
        row.upstream ? row.upstream.oldS.toFixed(2) : '',
        row.upstream ? row.upstream.newS.toFixed(2) : '',
        row.upstream ? fmtRatio(row.upstream.ratio) : '',
      ];
    }),
  );
  const shown = new Set(d.rows.map((r) => r.vcpus));
  const more = UPSTREAM.points.filter((p) => !shown.has(p.vcpus)).map((p) => `${p.vcpus} vCPUs ${p.oldS.toFixed(2)} -> ${p.newS.toFixed(2)} s (${fmtRatio(p.oldS / p.newS)})`);
  const details = table(
    ['vCPUs', 'profile', 'lock', 'iterations', '1st iter ms', 'later iter ms', 'warm-up iter ms', 'populate ms', 'get-log ms', 'faults/iter', 'read-side faults', 'lost races', 'wait/wait us', 'result'],
    d.points.map((p) => [
      `${p.vcpus}`,
      p.profile,
      p.lock,
      `${p.perf?.iterations ?? 0}`,
      fmtMs(p.perf?.first.iterations ? p.perf.first.dirtyMsPerIteration : null),
      fmtMs(p.perf?.rest.iterations ? p.perf.rest.dirtyMsPerIteration : null),
      fmtMs(p.perf?.warmup.iterations ? p.perf.warmup.dirtyMsPerIteration : null),
      fmtMs(p.perf ? p.perf.populateMs : null),
      fmtMs(p.perf ? p.perf.getDirtyLogMs : null),
      p.perf ? fmtRate(p.perf.faults / p.perf.iterations) : '',
      `${p.counters.readSideFaults} of ${p.counters.faults}`,
      `${p.counters.lostRaces}`,
      (p.faultLock.waitNsPerWait / 1000).toFixed(1),
      p.result + (p.error ? ` (${p.error.split('\n')[0]})` : p.violations.length ? ` (${p.violations[0]})` : ''),
    ]),
  );
  return [
    title(
      `dirty_log_perf_test (scenario ${d.scenario}, threads mode, THP guest, ${d.vcpuMem} per vCPU, every page written per iteration, ${d.passes} measured pass(es) of ${d.iterationsPerPass} iterations per point after ${d.warmupPasses} warm-up, same seed): ${o} (${d.profiles.old.lock}) against ${n} (${d.profiles.new.lock}), with upstream's \`${UPSTREAM.command}\` (${UPSTREAM.old} against ${UPSTREAM.new}):`,
    ),
    main,
    ...(more.length ? [`  upstream also: ${more.join('; ')}`] : []),
    '',
    title('Per point (measured passes; 1st iter: the first after logging is turned on, which splits the blocks; warm-up: the first pass, left out; lock figures over the whole run; wait/wait: mean wait of a fault that waited):'),
    details,
    '',
    ...d.notes.map((x) => `  - ${x}`),
  ];
}

function machineInfo(): Machine {
  return {
    nproc: typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length,
    cpuModel: cpuModel(),
    node: process.version,
    platform: `${process.platform} ${os.release()} ${process.arch}`,
    date: new Date().toISOString(),
    loadavgStart: os.loadavg(),
    loadavgEnd: [],
  };
}

/** Run the benchmarks; `progress` gets a line as each part finishes. */
export async function runBench(o: BenchOptions, progress: (line: string) => void): Promise<BenchResults> {
  const machine = machineInfo();
  const micro: MicroOptions = { timeMs: o.timeMs, warmupMs: Math.max(20, Math.min(200, o.timeMs)), rounds: o.rounds };
  const want = (s: Section): boolean => o.only.includes(s);
  const res: BenchResults = {
    tool: 's2stress bench',
    version: VERSION,
    machine,
    options: o,
    lock: null,
    tlb: null,
    fault: null,
    scaling: null,
    overhead: null,
    sim: null,
    dirtyLog: null,
    eagerSplit: null,
    ring: null,
    targets: [],
  };
  const T = res.targets;
  if (want('lock')) {
    progress('lock: acquire+release, uncontended ...');
    const rows = await lockBench(micro);
    res.lock = { rows, holdSampleEvery: DEFAULT_HOLD_SAMPLE };
    for (const subject of LOCK_SUBJECTS) {
      const r = rows.find((x) => x.name === lockConfigName({ ...subject, statistics: 'sampled' }))!;
      T.push({ name: `${lockLabel(subject)} lock acquire+release with statistics vs ${BARE_PAIR}`, target: `<= ${TARGETS.lockRatio}x`, measured: fmtRatio(r.ratio), met: r.ratio! <= TARGETS.lockRatio });
    }
  }
  if (want('tlb')) {
    progress('tlb: TLB-hit guest access ...');
    const rows = tlbBench(micro);
    res.tlb = { rows };
    for (const r of rows.filter((x) => x.ratio !== null)) {
      T.push({ name: `${r.name} vs ${r.baseline}`, target: `<= ${TARGETS.tlbRatio}x`, measured: fmtRatio(r.ratio), met: r.ratio! <= TARGETS.tlbRatio });
    }
  }
  if (want('fault')) {
    progress('fault: 4 KiB fault path, one core ...');
    const rows = faultBench(micro);
    res.fault = { rows };
    const r = rows.find((x) => x.statistics && x.name.includes('first touch'))!;
    T.push({ name: '4 KiB write fault (logging on, uncontended, statistics on), one core', target: `>= ${fmtRate(TARGETS.faultsPerSec)}/s`, measured: `${fmtRate(r.faultsPerSec)}/s`, met: r.faultsPerSec >= TARGETS.faultsPerSec });
  }
  const scalingOpts: ScalingOptions = { vcpus: o.vcpus, locks: o.locks, durationMs: o.durationMs, guestMem: o.guestMem, seed: o.seed, writePct: o.writePct };
  if (want('scaling')) {
    progress(`scaling: scenario ${SCALING_SCENARIO}, ${o.vcpus.join('/')} vCPUs x ${o.locks.join('/')}, ${formatDuration(o.durationMs)} each ...`);
    const points = await scalingBench(scalingOpts, progress);
    res.scaling = {
      scenario: SCALING_SCENARIO,
      durationMs: o.durationMs,
      guestMem: formatBytes(o.guestMem),
      cores: machine.nproc,
      note: `this machine has ${machine.nproc} core(s); every run also has a host-MM and a migrator thread, so points with more than ${Math.max(1, machine.nproc - 1)} vCPU(s) time-share the cores`,
      points,
    };
  }
  if (want('overhead')) {
    const lock: LockKind = o.locks.includes('ticket') ? 'ticket' : o.locks[0];
    const vcpus = o.overheadVcpus;
    progress(`overhead: lock statistics on vs off, ${lock}, ${vcpus} vCPUs, ${o.pairs} pair(s) of ${formatDuration(o.durationMs)} runs ...`);
    const contended: ContendResult[] = [];
    for (const kind of o.locks) {
      progress(`overhead: contended lock loop, ${kind}, ${machine.nproc} threads, ${o.contendPairs} pair(s) of rounds ...`);
      contended.push(
        await contendedBench({ kind, threads: Math.max(2, machine.nproc), roundMs: o.quick ? 50 : 200, pairs: o.contendPairs, holdWork: 200, outsideWork: 100 }),
      );
    }
    const ov = await overheadBench(scalingOpts, lock, vcpus, o.pairs, progress);
    res.overhead = { ...ov, durationMs: o.durationMs, scenario: SCALING_SCENARIO, contended };
    T.push({
      name: `lock statistics cost on a contended run (${lock}, ${vcpus} vCPUs, ${(ov.contentionRatio * 100).toFixed(0)}% contended), faults/s on/off`,
      target: `>= ${(1 - TARGETS.statsOverhead).toFixed(2)}`,
      measured: `${ov.faultsRatio.toFixed(3)} (95% CI ${ci(ov.faultsRatioCi)})`,
      met: ov.faultsRatio >= 1 - TARGETS.statsOverhead,
    });
    T.push({
      name: `lock statistics cost on a contended run (${lock}, ${vcpus} vCPUs), accesses/s on/off`,
      target: `>= ${(1 - TARGETS.statsOverhead).toFixed(2)}`,
      measured: `${ov.accessesRatio.toFixed(3)} (95% CI ${ci(ov.accessesRatioCi)})`,
      met: ov.accessesRatio >= 1 - TARGETS.statsOverhead,
    });
  }
  if (want('sim')) {
    const ops = o.quick ? 20_000 : 200_000;
    const rounds = o.quick ? 1 : 3;
    progress(`sim: sim mode against threads mode, 1 vCPU, ${ops} accesses, ${rounds} round(s) ...`);
    res.sim = await simSpeedBench({ ops, rounds, seed: o.seed });
    for (const row of res.sim.rows.filter((x) => x.mode !== 'threads' && x.mode !== UNPINNED)) {
      T.push({ name: `${row.mode} vs threads mode, single-vCPU accesses/s`, target: `>= ${TARGETS.simRatio}x`, measured: fmtRatio(row.ratio), met: row.ratio >= TARGETS.simRatio });
    }
    const random = res.sim.rows.find((x) => x.mode === 'sim random');
    if (random) T.push({ name: 'sim random vs threads mode, single-vCPU accesses/s (campaigns)', target: `>= ${TARGETS.simRandomCampaign}x`, measured: fmtRatio(random.ratio), met: random.ratio >= TARGETS.simRandomCampaign });
    // Seeds per CPU-minute of the default sim configuration (--quick: a
    // short run of it, 5 000 accesses, to exercise the measure).
    const seeds = o.quick ? [o.seed] : [o.seed, o.seed + 1, o.seed + 2];
    progress(`sim: campaign throughput, the default sim configuration, seeds ${seeds.join(',')} ...`);
    res.sim.seedRate = await seedRateBench({ seeds, extra: o.quick ? ['--ops', '5000'] : [] });
  }
  if (want('dirty-log')) {
    progress(`dirty-log: dirty_log_perf_test, ${o.profiles.join(' against ')}, ${o.vcpus.join('/')} vCPUs x ${formatBytes(o.vcpuMem)}, 1 warm-up + ${o.passes} pass(es) each ...`);
    res.dirtyLog = await dirtyLogBench({ vcpus: o.vcpus, vcpuMem: o.vcpuMem, profiles: o.profiles, passes: o.passes, seed: o.seed }, progress);
  }
  if (want('eager-split')) {
    progress(`eager-split: logging on with and without eager splitting, ${EAGER_SPLIT_PROFILE}, THP, ${o.vcpus.join('/')} vCPUs x ${formatBytes(o.vcpuMem)}, 1 warm-up + ${o.passes} pass(es) each ...`);
    res.eagerSplit = await eagerSplitBench({ vcpus: o.vcpus, vcpuMem: o.vcpuMem, profiles: o.profiles, passes: o.passes, seed: o.seed }, progress);
  }
  if (want('ring')) {
    const M = 1024 * 1024;
    const points = o.quick ? [{ guestMem: 64 * M, densityPct: 10 }] : [1, 10, 100].map((d) => ({ guestMem: 64 * M, densityPct: d })).concat([{ guestMem: 1024 * M, densityPct: 0.1 }]);
    const ro = { vcpus: 2, points, rounds: o.quick ? 3 : 50 };
    progress(`ring: harvest, KVM_GET_DIRTY_LOG against the dirty ring, ${ro.vcpus} vCPUs, ${ro.rounds} rounds per point ...`);
    res.ring = ringBench(ro, progress);
  }
  machine.loadavgEnd = os.loadavg();
  return res;
}

/** The ring section: pages harvested per second, bitmap against ring, same workload. */
function formatRing(r: RingBenchResult): string[] {
  return [
    title(`Dirty-page harvest: KVM_GET_DIRTY_LOG (bitmap) against the dirty ring (collect + KVM_RESET_DIRTY_RINGS), profile 6.10, anon guest, ${r.vcpus} vCPUs, ${r.rounds} rounds per point, one thread:`),
    table(
      ['guest', 'dirty per round', 'pages', 'bitmap pages/s', 'ring pages/s', 'ring/bitmap', 'bitmap us/harvest', 'ring us/harvest', 'ring entries'],
      r.rows.map((x) => [formatBytes(x.guestMem), `${x.densityPct}%`, String(x.pages), fmtRate(x.bitmapPagesPerSec), fmtRate(x.ringPagesPerSec), fmtRatio(x.ratio), x.bitmapUsPerHarvest.toFixed(1), x.ringUsPerHarvest.toFixed(1), String(x.ringSize)]),
    ),
  ];
}

export function formatBench(r: BenchResults, style: 'text' | 'markdown' = 'text'): string {
  markdown = style === 'markdown';
  try {
    return formatSections(r);
  } finally {
    markdown = false;
  }
}

function formatSections(r: BenchResults): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`s2stress bench ${r.version}: ${m.date}, node ${m.node}, ${m.nproc} core(s) (${m.cpuModel}), ${m.platform}`);
  out.push(`  load average at start ${m.loadavgStart.map((x) => x.toFixed(2)).join(' ')}, at end ${m.loadavgEnd.map((x) => x.toFixed(2)).join(' ')}${r.options.quick ? ' (--quick: figures are rough)' : ''}`);
  if (r.lock) {
    out.push('', title(`mmu_lock acquire+release, uncontended, one thread (ratio: median over ${r.options.rounds} round(s) of side-by-side runs):`), microTable(r.lock.rows));
  }
  if (r.tlb) out.push('', title('TLB-hit guest access against the bare Atomics it performs:'), microTable(r.tlb.rows));
  if (r.fault) {
    out.push(
      '',
      title('4 KiB fault path, one core, logging on, uncontended (kvm_handle_guest_abort driven directly):'),
      table(
        ['benchmark', 'ns/fault', 'faults/s'],
        r.fault.rows.map((x) => [x.name, fmtNs(x.nsPerFault), fmtRate(x.faultsPerSec)]),
      ),
    );
  }
  if (r.scaling) {
    const s = r.scaling;
    out.push('', title(`Scaling (threads mode, scenario ${s.scenario}, ${s.guestMem} THP guest, ${formatDuration(s.durationMs)} per point; ${s.note}):`), scalingTable(s.points));
  }
  if (r.overhead) {
    const ov = r.overhead;
    out.push(
      '',
      title('Lock statistics cost, lock-bound contended loop (not a run, so not the DESIGN.md measure: an upper bound. Threads take the lock in a loop, ~200 steps of shared-memory work inside, ~100 outside; rounds alternate statistics on/off. Each contended acquisition reads the clock inside the critical section, as lock_stat does, ~45 ns of a ~400 ns cycle):'),
      table(
        ['lock', 'threads', 'acq/s on (median)', 'acq/s off (median)', 'on/off (median of pairs)', 'contention', 'hold avg'],
        ov.contended.map((c) => [
          c.kind,
          `${c.threads}`,
          fmtRate(median(c.rounds.filter((x) => x.statistics).map((x) => x.acqPerSec))),
          fmtRate(median(c.rounds.filter((x) => !x.statistics).map((x) => x.acqPerSec))),
          c.ratio.toFixed(3),
          `${(c.contentionRatio * 100).toFixed(1)}%`,
          `${Math.round(c.holdAvgNs)}ns`,
        ]),
      ),
    );
    out.push(
      '',
      title(`Lock statistics cost on a contended run (${ov.lock}, ${ov.vcpus} vCPUs, scenario ${ov.scenario}, same seed, ${ov.pairs.length} alternating pair(s) of ${formatDuration(ov.durationMs)}):`),
      table(
        ['pair', 'faults/s on', 'faults/s off', 'on/off', 'accesses/s on', 'accesses/s off', 'on/off', 'contention'],
        ov.pairs.map((p, i) => [
          `${i + 1}`,
          fmtRate(p.on.faultsPerSec),
          fmtRate(p.off.faultsPerSec),
          (p.on.faultsPerSec / p.off.faultsPerSec).toFixed(3),
          fmtRate(p.on.accessesPerSec),
          fmtRate(p.off.accessesPerSec),
          (p.on.accessesPerSec / p.off.accessesPerSec).toFixed(3),
          p.on.contentionRatio === null ? '' : `${(p.on.contentionRatio * 100).toFixed(1)}%`,
        ]),
      ),
      `  median on/off: faults/s ${ov.faultsRatio.toFixed(3)} (95% CI ${ci(ov.faultsRatioCi)}, quartiles ${quartiles(ov.pairs.map((p) => p.on.faultsPerSec / p.off.faultsPerSec))}), accesses/s ${ov.accessesRatio.toFixed(3)} (95% CI ${ci(ov.accessesRatioCi)}, quartiles ${quartiles(ov.pairs.map((p) => p.on.accessesPerSec / p.off.accessesPerSec))}); more --pairs narrow the interval`,
    );
  }
  if (r.sim) out.push('', formatSimSpeed(r.sim));
  if (r.dirtyLog) out.push('', ...formatDirtyLog(r.dirtyLog));
  if (r.eagerSplit) out.push('', ...formatEagerSplit(r.eagerSplit));
  if (r.ring) out.push('', ...formatRing(r.ring));
  if (r.targets.length) {
    out.push('', title('Targets (DESIGN.md section 7):'), table(['target', 'wanted', 'measured', ''], r.targets.map((t) => [t.name, t.target, t.measured, t.met ? 'met' : 'MISSED'])));
  }
  return out.join('\n');
}

/** Entry point of `s2stress bench` (stress/cli.ts). Returns the exit code. */
export async function main(args: string[], io: Io): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(BENCH_USAGE);
    return 0;
  }
  let o: BenchOptions;
  try {
    o = parseBenchArgs(args);
    if (o.html) checkWritable('--html', o.html);
  } catch (e) {
    if (e instanceof ConfigError) {
      io.err(`s2stress bench: ${e.message}`);
      return 2;
    }
    throw e;
  }
  let r: BenchResults;
  try {
    r = await runBench(o, (line) => io.err(line));
  } catch (e) {
    io.err(`s2stress bench: harness failure: ${(e as Error)?.stack ?? String(e)}`);
    return 3;
  }
  io.out(formatBench(r));
  if (o.json) writeFileSync(o.json, JSON.stringify(r, null, 2) + '\n');
  if (o.markdown) writeFileSync(o.markdown, formatBench(r, 'markdown') + '\n');
  if (o.html) writeTextAtomic(o.html, htmlBench(r));
  const runs = [
    ...(r.scaling?.points ?? []),
    ...(r.overhead?.pairs.flatMap((p) => [p.on, p.off]) ?? []),
    ...(r.dirtyLog?.points ?? []),
    ...(r.eagerSplit?.rows.flatMap((x) => [x.off, x.on]) ?? []),
  ];
  if (runs.some((p) => p.error)) return 3;
  if (runs.some((p) => p.result === 'fail')) return 1;
  return 0;
}
