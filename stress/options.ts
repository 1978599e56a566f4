/**
 * The run configuration: CLI flags (DESIGN.md section 5) parsed, validated
 * and resolved into one object that is written into every report and is
 * enough to replay the run.
 */
import { BACKINGS, ConfigError, DEFAULT_MODEL, LOCK_KINDS, type ModelConfig, PROFILES, RESCHED_GRANULE_DEFAULT, formatBytes, validateModelConfig, type Backing, type LockKind, type ProfileName } from '../src/config.js';
import { BUG_NAMES } from '../src/profiles.js';
import { SCENARIOS, findScenario } from './scenarios.js';
import { formatDuration, parseDuration, parseFloatFlag, parseIntFlag, parseSize } from './units.js';

export const MODES = ['threads', 'sim'] as const;
export type Mode = (typeof MODES)[number];
export const SCHEDS = ['random', 'pct'] as const;
export type SchedKind = (typeof SCHEDS)[number];

export interface RunOptions {
  scenario: string;
  profile: ProfileName;
  bugs: string[];
  mode: Mode;
  sched: SchedKind;
  pctDepth: number;
  chaos: number;
  vcpus: number;
  guestMem: number;
  backing: Backing;
  writePct: number;
  lock: LockKind;
  /** Run length: a duration in ms, or a number of guest accesses (all vCPUs together). */
  durationMs: number | null;
  ops: number | null;
  seed: number;
  json: string | null;
  quiet: boolean;
  /** Quiescence check period (ms), threads mode. */
  checkEveryMs: number;
  /** Quiescence check period in scheduling steps, sim mode (0 = scaled with the guest). */
  checkEverySteps: number;
  /** Watchdog: an actor without progress this long is a `progress` violation (ms). */
  watchdogMs: number;
  /** Keep lock statistics. */
  lockStats: boolean;
  /** Lock statistics: after each site's first holds, time one hold in this many (power of two; 1 = all, as lock_stat). */
  lockHoldSample: number;
  /** Testing aid: make this actor's worker throw (e.g. vcpu1, hostmm, migrator). */
  crashActor: string | null;
  /** Bytes a long stage-2 walk covers between cond_resched_lock() calls (1 GiB, down to 2 MiB). */
  reschedGranule: number;
}

export const DEFAULT_DURATION_MS = 20_000;
/** Length of a sim run when --ops is not given (guest accesses, all vCPUs). */
export const DEFAULT_SIM_OPS = 100_000;

export function defaultOptions(): RunOptions {
  return {
    scenario: 'mixed',
    profile: 'fixed',
    bugs: [],
    mode: 'threads',
    sched: 'random',
    pctDepth: 3,
    chaos: 0,
    vcpus: 4,
    guestMem: 1024 * 1024 * 1024,
    backing: 'thp',
    writePct: 50,
    lock: 'ticket',
    durationMs: null,
    ops: null,
    seed: 0,
    json: null,
    quiet: false,
    checkEveryMs: 1000,
    checkEverySteps: 0,
    watchdogMs: 15_000,
    lockStats: true,
    lockHoldSample: 256,
    crashActor: null,
    reschedGranule: RESCHED_GRANULE_DEFAULT,
  };
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(flag, `${flag} must be one of ${allowed.join('|')}, got '${value}'`);
  }
  return value as T;
}

/** Flags that take a value, and the boolean ones. */
const VALUE_FLAGS = new Set([
  '--scenario',
  '--profile',
  '--bug',
  '--mode',
  '--sched',
  '--pct-depth',
  '--chaos',
  '--vcpus',
  '--guest-mem',
  '--backing',
  '--write-pct',
  '--lock',
  '--duration',
  '--ops',
  '--seed',
  '--json',
  '--check-every',
  '--check-steps',
  '--watchdog',
  '--crash-actor',
  '--lock-hold-sample',
  '--resched-granule',
]);
const BOOL_FLAGS = new Set(['--quiet', '--no-lock-stats']);

export const RUN_FLAGS_HELP = `s2stress run [--scenario NAME] [--profile v14|v15|fixed] [--bug NAME]...
             [--mode threads|sim] [--sched random|pct] [--pct-depth D] [--chaos P]
             [--vcpus N] [--guest-mem SIZE] [--backing anon|thp|hugetlb|mixed]
             [--write-pct P] [--lock ticket|tas] [--duration TIME | --ops N] [--seed N]
             [--json FILE] [--quiet] [--check-every TIME] [--watchdog TIME] [--no-lock-stats]
             [--lock-hold-sample N] [--resched-granule SIZE]`;

/** Parse `run` flags into resolved options. Throws ConfigError naming the flag. */
export function parseRunArgs(argv: readonly string[], base: RunOptions = defaultOptions()): RunOptions {
  const o: RunOptions = { ...base, bugs: [...base.bugs] };
  let seedGiven = false;
  let durationGiven = false;
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (BOOL_FLAGS.has(arg)) {
      if (arg === '--quiet') o.quiet = true;
      if (arg === '--no-lock-stats') o.lockStats = false;
      continue;
    }
    if (!VALUE_FLAGS.has(arg)) {
      throw new ConfigError(arg, `unknown flag '${arg}' for run; accepted:\n${RUN_FLAGS_HELP}`);
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new ConfigError(arg, `${arg} needs a value`);
    }
    switch (arg) {
      case '--scenario':
        if (!findScenario(value)) throw new ConfigError(arg, `--scenario must be one of ${SCENARIOS.map((s) => s.name).join('|')}, got '${value}'`);
        o.scenario = value;
        break;
      case '--profile':
        o.profile = oneOf(arg, value, PROFILES);
        break;
      case '--bug':
        if (!BUG_NAMES.includes(value)) throw new ConfigError(arg, `--bug '${value}' is not a known defect; known: ${BUG_NAMES.join(', ')}`);
        if (!o.bugs.includes(value)) o.bugs.push(value);
        break;
      case '--mode':
        o.mode = oneOf(arg, value, MODES);
        break;
      case '--sched':
        o.sched = oneOf(arg, value, SCHEDS);
        break;
      case '--pct-depth':
        o.pctDepth = parseIntFlag(arg, value, 1, 16);
        break;
      case '--chaos':
        o.chaos = parseFloatFlag(arg, value, 0, 1);
        break;
      case '--vcpus':
        o.vcpus = parseIntFlag(arg, value, -1e9, 1e9);
        break;
      case '--guest-mem':
        o.guestMem = parseSize(arg, value);
        break;
      case '--backing':
        o.backing = oneOf(arg, value, BACKINGS);
        break;
      case '--write-pct':
        o.writePct = parseFloatFlag(arg, value, 0, 100);
        break;
      case '--lock':
        o.lock = oneOf(arg, value, LOCK_KINDS);
        break;
      case '--duration':
        o.durationMs = parseDuration(arg, value);
        o.ops = null;
        durationGiven = true;
        break;
      case '--ops':
        o.ops = parseIntFlag(arg, value, 1, Number.MAX_SAFE_INTEGER);
        o.durationMs = null;
        break;
      case '--seed':
        o.seed = parseIntFlag(arg, value, 0, 0xffffffff);
        seedGiven = true;
        break;
      case '--json':
        o.json = value;
        break;
      case '--check-every':
        o.checkEveryMs = parseDuration(arg, value);
        break;
      case '--check-steps':
        o.checkEverySteps = parseIntFlag(arg, value, 100, 1e12);
        break;
      case '--watchdog':
        o.watchdogMs = parseDuration(arg, value);
        break;
      case '--lock-hold-sample':
        o.lockHoldSample = parseIntFlag(arg, value, 1, 65536);
        break;
      case '--resched-granule':
        o.reschedGranule = parseSize(arg, value);
        break;
      case '--crash-actor':
        if (!/^(vcpu\d+|hostmm|migrator)$/.test(value)) throw new ConfigError(arg, `--crash-actor takes vcpuN, hostmm or migrator, got '${value}'`);
        o.crashActor = value;
        break;
    }
  }
  if (o.mode === 'sim') {
    if (durationGiven) {
      throw new ConfigError('--duration', '--duration does not apply to --mode sim: a sim run is measured in guest accesses so that it replays exactly; use --ops N');
    }
    if (o.ops === null) o.ops = DEFAULT_SIM_OPS;
    o.durationMs = null;
  }
  if (o.durationMs === null && o.ops === null) o.durationMs = DEFAULT_DURATION_MS;
  if (!seedGiven && base.seed === 0) o.seed = (Date.now() ^ (process.pid << 16)) >>> 0;
  validateModelConfig(toModelConfig(o), BUG_NAMES);
  return o;
}

export function toModelConfig(o: RunOptions): ModelConfig {
  return {
    ...DEFAULT_MODEL,
    vcpus: o.vcpus,
    guestMem: o.guestMem,
    backing: o.backing,
    profile: o.profile,
    bugs: o.bugs,
    lock: o.lock,
    lockStats: o.lockStats,
    lockHoldSample: o.lockHoldSample ?? DEFAULT_MODEL.lockHoldSample,
    reschedGranule: o.reschedGranule ?? RESCHED_GRANULE_DEFAULT,
    // sim mode: cond_resched_lock() drops at every call and the scheduler decides who runs
    condReschedEvery: o.mode === 'sim' ? 1 : undefined,
  };
}

/** The exact command line that repeats this run. */
export function replayCommand(o: RunOptions): string {
  const parts = [
    's2stress run',
    `--scenario ${o.scenario}`,
    `--profile ${o.profile}`,
    ...o.bugs.map((b) => `--bug ${b}`),
    `--mode ${o.mode}`,
  ];
  if (o.mode === 'sim') parts.push(`--sched ${o.sched}`, `--pct-depth ${o.pctDepth}`);
  if (o.mode === 'sim' && o.checkEverySteps > 0) parts.push(`--check-steps ${o.checkEverySteps}`);
  if (o.chaos > 0) parts.push(`--chaos ${o.chaos}`);
  parts.push(
    `--vcpus ${o.vcpus}`,
    `--guest-mem ${formatBytes(o.guestMem)}`,
    `--backing ${o.backing}`,
    `--write-pct ${o.writePct}`,
    `--lock ${o.lock}`,
    o.ops !== null ? `--ops ${o.ops}` : `--duration ${formatDuration(o.durationMs ?? DEFAULT_DURATION_MS)}`,
    `--seed ${o.seed}`,
  );
  if ((o.reschedGranule ?? RESCHED_GRANULE_DEFAULT) !== RESCHED_GRANULE_DEFAULT) parts.push(`--resched-granule ${formatBytes(o.reschedGranule)}`);
  return parts.join(' ');
}
