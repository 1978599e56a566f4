/**
 * The run configuration: CLI flags parsed, validated and resolved into one
 * object that is written into every report and is enough to replay the run.
 *
 * One validation serves `run` and `replay`: a report's configuration is
 * turned back into the flags that made it (runArgsOf) and parsed by
 * parseRunArgs, so a report is accepted exactly when the command line it
 * stands for would be.
 */
import { allowedCpus, canPin, formatCpuList } from '../src/sim/pin.js';
import { ARCHS, BACKINGS, ConfigError, DEFAULT_MODEL, DIRTY_LOGS, DIRTY_RING_DEFAULT_ENTRIES, DIRTY_RING_FIRST_PROFILE, DIRTY_RING_MIN_ENTRIES, KVM_DIRTY_RING_MAX_ENTRIES, type DirtyLog, KERNEL_PROFILES, LOCK_KINDS, MANUAL_PROTECT, MAX_VCPUS, MIN_VCPUS, type ModelConfig, PROFILES, RESCHED_GRANULE_DEFAULT, formatBytes, validateModelConfig, type Arch, type Backing, type LockKind, type ManualProtect, type ProfileName } from '../src/config.js';
import { BUG_NAMES, FEATURE_SINCE, FIX_NAMES, checkProfileFeatures, firstProfileSince, resolveProtocol } from '../src/profiles.js';
import { ALL_SCENARIOS, HOST_OP_KINDS, findScenario, scenarioHostOpKinds } from './scenarios.js';
import { formatDuration, parseDuration, parseFloatFlag, parseIntFlag, parseSize } from './units.js';

export const MODES = ['threads', 'sim'] as const;
export type Mode = (typeof MODES)[number];
export const SCHEDS = ['random', 'pct'] as const;
export type SchedKind = (typeof SCHEDS)[number];

export interface RunOptions {
  scenario: string;
  profile: ProfileName;
  /** TLB semantics asked for with --arch; null (or absent in older reports): the profile's own. */
  arch?: Arch | null;
  bugs: string[];
  /** Candidate fixes (`--fix`, src/profiles.ts FIXES). */
  fixes: string[];
  mode: Mode;
  sched: SchedKind;
  pctDepth: number;
  chaos: number;
  vcpus: number;
  guestMem: number;
  backing: Backing;
  writePct: number;
  lock: LockKind;
  /**
   * Set when --lock chose another lock kind than the profile's (the arm64
   * profiles from 5.18 take an rwlock, the older ones a spinlock): says so.
   */
  lockOverride: string | null;
  /** Run length: a duration in ms, or a number of guest accesses (all vCPUs together). */
  durationMs: number | null;
  ops: number | null;
  seed: number;
  json: string | null;
  /** --html FILE: the HTML report (display only). */
  html?: string | null;
  quiet: boolean;
  /** Print a crashed worker's stack (it is in the report's `error` either way). */
  verbose?: boolean;
  /** Print every lock_stat column (the default table fits 120 columns). */
  wide?: boolean;
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
  /**
   * Sim mode: end the run at the first end-of-run check at or after this
   * scheduling step, as an interrupted run did (replay of an interrupted run).
   */
  stopStep?: number | null;
  /** Fault in anonymous and THP guest RAM at start (QEMU's -mem-prealloc); default: untouched. */
  memPrealloc: boolean;
  /** Bytes a long stage-2 walk covers between cond_resched_lock() calls (1 GiB, down to 2 MiB). */
  reschedGranule: number;
  /** Manual-protect dirty logging: off (absent in older reports), on, initially-set. */
  manualProtect?: ManualProtect;
  /** KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE in bytes, 0 = off (absent in older reports). */
  eagerSplitChunk?: number;
  /** `--dirty-log`: bitmap (KVM_GET_DIRTY_LOG; absent in older reports) or ring (per-vCPU dirty rings, 6.2 on). */
  dirtyLog?: DirtyLog;
  /** `--dirty-ring-size`: entries per vCPU ring (ring mode); null in bitmap mode. */
  dirtyRingSize?: number | null;
  /**
   * --host-ops LIST: the host-MM operation kinds the run draws, a subset of
   * the scenario's (HOST_OP_KINDS of stress/scenarios.ts); null (or absent in
   * older reports): all of the scenario's. `shrink` drops kinds one by one.
   */
  hostOps?: string[] | null;
  /**
   * Sim mode, --max-preemptions K: after K preemptive switches the strategy
   * stops preempting (the running actor goes on until it blocks, yields or
   * ends); null (or absent in older reports): unbounded, the schedule of
   * every seed as before.
   */
  maxPreemptions?: number | null;
  /**
   * Sim mode, --sim-cpu: the CPU every actor thread is pinned to (one runs
   * at a time, and a hand-over within one core is cheaper): 'auto' (the
   * default: the CPU with the fewest sim runs of this user on it), 'off', or
   * a CPU number. It changes no schedule, so replay does not take it from a
   * report. Absent in older reports: 'auto'.
   */
  simCpu?: string;
}

export const DEFAULT_DURATION_MS = 20_000;
/** Length of a sim run when --ops is not given (guest accesses, all vCPUs). */
export const DEFAULT_SIM_OPS = 100_000;
/**
 * --watchdog bounds. Below 100 ms an ordinary hiccup (a garbage collection,
 * a thread descheduled for a few time slices on a busy machine; the
 * orchestrator polls every 10 ms) reads as a stall: false `progress`
 * violations. Above an hour nobody is waiting for the verdict, and the
 * shutdown wait (which is at least the watchdog) stays bounded.
 */
export const WATCHDOG_MIN_MS = 100;
export const WATCHDOG_MAX_MS = 3_600_000;
/** --check-every bounds: up to an hour (a longer period is no check at all; the final check always runs). */
export const CHECK_EVERY_MAX_MS = 3_600_000;
export const MAX_OPS = 1e12;
export const MAX_SEED = 0xffffffff;

export function defaultOptions(): RunOptions {
  return {
    scenario: 'mixed',
    profile: 'fixed',
    arch: null,
    bugs: [],
    fixes: [],
    mode: 'threads',
    sched: 'random',
    pctDepth: 3,
    chaos: 0,
    vcpus: 4,
    guestMem: 1024 * 1024 * 1024,
    backing: 'thp',
    writePct: 50,
    lock: 'ticket',
    lockOverride: null,
    durationMs: null,
    ops: null,
    seed: 0,
    json: null,
    html: null,
    quiet: false,
    verbose: false,
    wide: false,
    checkEveryMs: 1000,
    checkEverySteps: 0,
    watchdogMs: 15_000,
    lockStats: true,
    lockHoldSample: 256,
    crashActor: null,
    stopStep: null,
    memPrealloc: false,
    reschedGranule: RESCHED_GRANULE_DEFAULT,
    manualProtect: 'off',
    eagerSplitChunk: 0,
    dirtyLog: 'bitmap',
    dirtyRingSize: null,
    hostOps: null,
    maxPreemptions: null,
    simCpu: 'auto',
  };
}

/** --sim-cpu: auto, off, or a CPU this process may run on, where threads can be pinned. */
function parseSimCpu(flag: string, value: string): string {
  if (value === 'auto' || value === 'off') return value;
  const allowed = allowedCpus();
  const list = allowed ? ` (${formatCpuList(allowed)})` : '';
  if (!/^\d+$/.test(value) || (allowed !== null && !allowed.includes(Number(value)))) {
    throw new ConfigError(flag, `${flag} takes auto, off or a CPU this process may run on${list}, got '${value}'`);
  }
  if (!canPin()) throw new ConfigError(flag, `${flag} ${value}: threads cannot be pinned here (Linux's taskset, from util-linux, is needed); use --sim-cpu auto or off`);
  return String(Number(value));
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(flag, `${flag} must be one of ${allowed.join('|')}, got '${value}'`);
  }
  return value as T;
}

/** Where a flag applies. */
type Applies = 'both' | Mode;

interface FlagSpec {
  /** Takes a value (else a switch). */
  value: boolean;
  applies: Applies;
  /** Changes what is printed or written, or where the run runs, not the run itself (the only flags `replay` takes besides the report). */
  display?: boolean;
}

/** Every `run` flag. */
export const RUN_FLAGS: Readonly<Record<string, FlagSpec>> = {
  '--scenario': { value: true, applies: 'both' },
  '--profile': { value: true, applies: 'both' },
  '--arch': { value: true, applies: 'both' },
  '--bug': { value: true, applies: 'both' },
  '--fix': { value: true, applies: 'both' },
  '--mode': { value: true, applies: 'both' },
  '--sched': { value: true, applies: 'sim' },
  '--pct-depth': { value: true, applies: 'sim' },
  '--chaos': { value: true, applies: 'threads' },
  '--vcpus': { value: true, applies: 'both' },
  '--guest-mem': { value: true, applies: 'both' },
  '--backing': { value: true, applies: 'both' },
  '--write-pct': { value: true, applies: 'both' },
  '--lock': { value: true, applies: 'both' },
  '--duration': { value: true, applies: 'threads' },
  '--ops': { value: true, applies: 'both' },
  '--seed': { value: true, applies: 'both' },
  '--json': { value: true, applies: 'both', display: true },
  '--html': { value: true, applies: 'both', display: true },
  '--quiet': { value: false, applies: 'both', display: true },
  '--verbose': { value: false, applies: 'both', display: true },
  '--wide': { value: false, applies: 'both', display: true },
  '--check-every': { value: true, applies: 'threads' },
  '--check-steps': { value: true, applies: 'sim' },
  '--watchdog': { value: true, applies: 'threads' },
  '--no-lock-stats': { value: false, applies: 'both' },
  '--mem-prealloc': { value: false, applies: 'both' },
  '--resched-granule': { value: true, applies: 'both' },
  '--manual-protect': { value: true, applies: 'both' },
  '--eager-split-chunk': { value: true, applies: 'both' },
  '--lock-hold-sample': { value: true, applies: 'both' },
  '--crash-actor': { value: true, applies: 'both' },
  '--stop-step': { value: true, applies: 'sim' },
  '--dirty-log': { value: true, applies: 'both' },
  '--dirty-ring-size': { value: true, applies: 'both' },
  '--host-ops': { value: true, applies: 'both' },
  '--max-preemptions': { value: true, applies: 'sim' },
  '--sim-cpu': { value: true, applies: 'sim', display: true },
};

/** Flags that may be given more than once. */
const REPEATABLE = new Set(['--bug', '--fix']);

export const RUN_FLAGS_HELP = `s2stress run [--scenario NAME] [--profile NAME] [--arch armv7|arm64] [--bug NAME]... [--fix NAME]...
             [--mode threads|sim] [--vcpus N] [--guest-mem SIZE] [--backing anon|thp|hugetlb|mixed]
             [--write-pct P] [--lock ticket|tas|rwlock] [--duration TIME | --ops N] [--seed N]
             [--json FILE] [--html FILE] [--quiet] [--verbose] [--wide]
             [--no-lock-stats] [--lock-hold-sample N] [--crash-actor ACTOR] [--mem-prealloc]
             [--resched-granule SIZE] [--manual-protect off|on|initially-set] [--eager-split-chunk SIZE]
             [--dirty-log bitmap|ring] [--dirty-ring-size N]
             [--host-ops LIST]
    threads mode only: [--chaos P] [--check-every TIME] [--watchdog TIME]
    sim mode only:     [--sched random|pct] [--pct-depth D] [--check-steps N] [--stop-step N] [--max-preemptions K]
                       [--sim-cpu auto|off|N]`;

/** What each run flag accepts (s2stress run --help). */
export const RUN_FLAGS_DETAIL = `  --scenario NAME        default mixed (s2stress list scenarios names and describes each)
  --profile NAME         a kernel version, ${PROFILES[0]} to ${KERNEL_PROFILES[KERNEL_PROFILES.length - 1]}, or v15|fixed|modern (default fixed;
                         s2stress list profiles); the arm64 profiles from 5.18 take an rwlock mmu_lock
  --arch ARCH            TLB semantics: ${ARCHS.join('|')} (default: the architecture the profile ran on)
  --bug NAME             inject a defect (repeatable; s2stress list bugs)
  --fix NAME             apply a candidate fix the profile lacks (repeatable; s2stress list fixes)
  --mode MODE            threads (default: one worker per actor, real parallelism) | sim (deterministic)
  --vcpus N              ${MIN_VCPUS} to ${MAX_VCPUS} (default 4)
  --guest-mem SIZE       2M to 16G, a multiple of 2M (default 1G)
  --backing KIND         ${BACKINGS.join('|')} (default thp)
  --write-pct P          share of guest writes, 0 to 100 (default 50)
  --lock KIND            ${LOCK_KINDS.join('|')} (default ticket): mmu_lock as a ticket spinlock, a
                         test-and-set spinlock, or arm64's queued rwlock (Linux 5.18+: readers share it)
  --duration TIME        threads mode: 1ms to 168h (default 20s); a run goes on past it until it has
                         done some guest accesses and, with migrations, one migration or cancel,
                         for at most --watchdog more
  --ops N                guest accesses of all vCPUs together, 1 to ${MAX_OPS} (sim default ${DEFAULT_SIM_OPS})
  --seed N               0 to ${MAX_SEED} (default: drawn, and printed in the rerun line)
  --json FILE            write the JSON report there (checked writable at start, written atomically)
  --html FILE            write the HTML report there: one self-contained file, plots as SVG
  --quiet                one line at the end; no live status
  --verbose              also print a crashed worker's stack
  --wide                 every lock_stat column (the default table fits 120 columns)
  --no-lock-stats        keep no lock statistics
  --mem-prealloc         fault guest RAM in at start (QEMU -mem-prealloc); default: untouched (zero page)
  --resched-granule SIZE stage-2 walks offer cond_resched_lock() every SIZE, 2M to 1G (default 1G)
  --manual-protect MODE  off (default) | on | initially-set: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, each harvest is
                         KVM_GET_DIRTY_LOG then KVM_CLEAR_DIRTY_LOG chunk by chunk; initially-set adds
                         KVM_DIRTY_LOG_INITIALLY_SET (profiles ${firstProfileSince(FEATURE_SINCE.manualProtect)} on; initially-set ${firstProfileSince(FEATURE_SINCE.initiallySet)} on)
  --eager-split-chunk SIZE  KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE: 0 (default, off), 4K, 2M or 1G; blocks split
                         when logging goes on (in CLEAR with initially-set) (profiles ${firstProfileSince(FEATURE_SINCE.eagerSplit)} on)
  --dirty-log KIND       ${DIRTY_LOGS.join('|')} (default bitmap): how dirty pages reach the migrator, KVM_GET_DIRTY_LOG
                         or per-vCPU dirty rings with a backup bitmap (profile ${DIRTY_RING_FIRST_PROFILE} or later)
  --dirty-ring-size N    entries per vCPU ring, a power of two from ${DIRTY_RING_MIN_ENTRIES} to ${KVM_DIRTY_RING_MAX_ENTRIES} (default ${DIRTY_RING_DEFAULT_ENTRIES});
                         a vCPU exits when 64 (KVM_DIRTY_RING_RSVD_ENTRIES) are left
  --lock-hold-sample N   time one uncontended hold in N, a power of two from 1 to 65536 (default 256)
  --host-ops LIST        the host-MM operation kinds to draw: a comma list of the scenario's own, or none
                         (kinds: ${HOST_OP_KINDS.join(', ')});
                         default: all of the scenario's
  --crash-actor ACTOR    testing aid: that actor's worker throws (vcpuN below --vcpus, hostmm, migrator)
  --chaos P              threads: seeded random delays at a fraction P of scheduling points, 0 to 1
  --check-every TIME     threads: stop-the-world check period, 1ms to 1h (default 1s)
  --watchdog TIME        threads: a stall this long is a progress violation, ${formatDuration(WATCHDOG_MIN_MS)} to ${formatDuration(WATCHDOG_MAX_MS)} (default 15s)
  --sched KIND           sim: random (default) | pct
  --pct-depth D          sim, with --sched pct: PCT depth, 1 to 16 (default 3)
  --check-steps N        sim: stop-the-world check period in scheduling steps, 100 to 1000000000000
  --stop-step N          sim: end as an interrupted run did, at its end-of-run check at or after step N
  --max-preemptions K    sim: after K preemptive switches, switch only when the running actor blocks, yields
                         or ends (preemption bounding, as CHESS); 0 to 1000000000 (default: unbounded)
  --sim-cpu auto|off|N   sim: pin every actor thread to one CPU (one runs at a time; a hand-over within a core
                         costs less than a wake-up on another): auto (default: the CPU with the fewest sim runs
                         of this user on it), off, or a CPU this process may run on; no schedule changes`;

export const EXIT_CODES_HELP = `exit codes: 0 passed; 1 an invariant was violated; 2 bad usage or configuration;
  3 the harness failed or the run did no work (no guest access, or no migration in a scenario with migrations);
  129, 130, 143 interrupted by SIGHUP, SIGINT, SIGTERM (1 if a violation was found before)`;

/**
 * --host-ops LIST: comma-separated kinds of HOST_OP_KINDS, or `none`; kept in
 * HOST_OP_KINDS order without repeats (one spelling per set: the rerun line
 * and the report's config are canonical).
 */
export function parseHostOpsList(value: string): string[] {
  if (value === 'none') return [];
  const parts = value.split(',').map((x) => x.trim());
  const bad = parts.filter((x) => !(HOST_OP_KINDS as readonly string[]).includes(x));
  if (bad.length || parts.length === 0) {
    throw new ConfigError('--host-ops', `--host-ops takes a comma list of ${HOST_OP_KINDS.join(', ')}, or none; got '${value}'${bad.length ? ` (unknown: ${bad.map((b) => `'${b}'`).join(', ')})` : ''}`);
  }
  return HOST_OP_KINDS.filter((k) => parts.includes(k));
}

/** Parse `run` flags into resolved options. Throws ConfigError naming the flag. */
export function parseRunArgs(argv: readonly string[], base: RunOptions = defaultOptions()): RunOptions {
  const o: RunOptions = { ...base, bugs: [...base.bugs], fixes: [...(base.fixes ?? [])] };
  const given = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const spec = RUN_FLAGS[arg];
    if (!spec) {
      throw new ConfigError(arg, `unknown ${arg.startsWith('-') ? 'flag' : 'argument'} '${arg}' for run; accepted:\n${RUN_FLAGS_HELP}`);
    }
    if (given.has(arg) && !REPEATABLE.has(arg)) throw new ConfigError(arg, `${arg} is given more than once (only --bug may be repeated)`);
    given.add(arg);
    if (!spec.value) {
      if (value !== undefined) throw new ConfigError(arg, `${arg} is a switch and takes no value, got '${arg}=${value}'`);
      if (arg === '--quiet') o.quiet = true;
      if (arg === '--verbose') o.verbose = true;
      if (arg === '--wide') o.wide = true;
      if (arg === '--no-lock-stats') o.lockStats = false;
      if (arg === '--mem-prealloc') o.memPrealloc = true;
      continue;
    }
    if (value === undefined) {
      value = argv[i + 1];
      // `--json --quiet`: the next flag is not a value.
      if (value === undefined || value.startsWith('--')) throw new ConfigError(arg, `${arg} needs a value${value === undefined ? '' : `, got the flag '${value}'`}`);
      i++;
    }
    switch (arg) {
      case '--scenario':
        if (!findScenario(value)) throw new ConfigError(arg, `--scenario must be one of ${ALL_SCENARIOS.map((s) => s.name).join('|')}, got '${value}'`);
        o.scenario = value;
        break;
      case '--profile':
        o.profile = oneOf(arg, value, PROFILES);
        break;
      case '--arch':
        o.arch = oneOf(arg, value, ARCHS);
        break;
      case '--fix':
        if (!o.fixes.includes(value)) o.fixes.push(value);
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
        o.vcpus = parseIntFlag(arg, value, MIN_VCPUS, MAX_VCPUS);
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
        break;
      case '--ops':
        o.ops = parseIntFlag(arg, value, 1, MAX_OPS);
        o.durationMs = null;
        break;
      case '--seed':
        o.seed = parseIntFlag(arg, value, 0, MAX_SEED);
        break;
      case '--html':
        o.html = value;
        break;
      case '--json':
        o.json = value;
        break;
      case '--check-every':
        o.checkEveryMs = parseDuration(arg, value, 1, CHECK_EVERY_MAX_MS);
        break;
      case '--check-steps':
        o.checkEverySteps = parseIntFlag(arg, value, 100, 1e12);
        break;
      case '--watchdog':
        o.watchdogMs = parseDuration(arg, value, WATCHDOG_MIN_MS, WATCHDOG_MAX_MS);
        break;
      case '--lock-hold-sample':
        o.lockHoldSample = parseIntFlag(arg, value, 1, 65536);
        break;
      case '--resched-granule':
        o.reschedGranule = parseSize(arg, value);
        break;
      case '--manual-protect':
        o.manualProtect = oneOf(arg, value, MANUAL_PROTECT);
        break;
      case '--eager-split-chunk':
        o.eagerSplitChunk = value === '0' ? 0 : parseSize(arg, value);
        break;
      case '--crash-actor':
        if (!/^(vcpu\d+|hostmm|migrator)$/.test(value)) throw new ConfigError(arg, `--crash-actor takes vcpuN (N below --vcpus), hostmm or migrator, got '${value}'`);
        o.crashActor = value;
        break;
      case '--stop-step':
        o.stopStep = parseIntFlag(arg, value, 1, 1e15);
        break;
      case '--sim-cpu':
        o.simCpu = parseSimCpu(arg, value);
        break;
      case '--dirty-log':
        o.dirtyLog = oneOf(arg, value, DIRTY_LOGS);
        break;
      case '--dirty-ring-size':
        o.dirtyRingSize = parseIntFlag(arg, value, 1, KVM_DIRTY_RING_MAX_ENTRIES * 16);
        break;
      case '--max-preemptions':
        o.maxPreemptions = parseIntFlag(arg, value, 0, 1e9);
        break;
      case '--host-ops':
        o.hostOps = parseHostOpsList(value);
        break;
    }
  }
  // Checks across flags, whatever their order.
  if (given.has('--duration') && given.has('--ops')) {
    throw new ConfigError('--duration', '--duration and --ops are two ways to say how long the run is: give one of them');
  }
  for (const flag of given) {
    const applies = RUN_FLAGS[flag].applies;
    if (applies !== 'both' && applies !== o.mode) {
      const why = flag === '--duration' ? ': a sim run is measured in guest accesses so that it replays exactly; use --ops N' : '';
      throw new ConfigError(flag, `${flag} does not apply to --mode ${o.mode} (it is a ${applies}-mode flag)${why}`);
    }
  }
  if (given.has('--pct-depth') && o.sched !== 'pct') {
    throw new ConfigError('--pct-depth', `--pct-depth applies to --sched pct only, got --sched ${o.sched}`);
  }
  if (given.has('--lock-hold-sample') && !o.lockStats) {
    throw new ConfigError('--lock-hold-sample', '--lock-hold-sample does not apply with --no-lock-stats (no hold is timed)');
  }
  if (o.hostOps != null) {
    // Checked against the scenario whatever the order of the flags.
    const own = scenarioHostOpKinds(findScenario(o.scenario)!);
    const foreign = o.hostOps.filter((k) => !(own as string[]).includes(k));
    if (foreign.length) {
      throw new ConfigError(
        '--host-ops',
        own.length
          ? `--host-ops ${foreign.join(',')}: not a host operation of scenario ${o.scenario}, whose kinds are ${own.join(',')} (or none)`
          : `--host-ops ${foreign.join(',')}: scenario ${o.scenario} runs no host-MM operation; only --host-ops none applies`,
      );
    }
  }
  if (o.crashActor !== null) {
    const v = /^vcpu(\d+)$/.exec(o.crashActor);
    if (v && Number(v[1]) >= o.vcpus) {
      throw new ConfigError('--crash-actor', `--crash-actor ${o.crashActor} names no actor of this run: the vCPUs are vcpu0 to vcpu${o.vcpus - 1}; or hostmm, migrator`);
    }
  }
  checkDirtyLog(o);
  if (o.mode === 'sim') {
    if (o.ops === null) o.ops = DEFAULT_SIM_OPS;
    o.durationMs = null;
  } else {
    o.stopStep = null;
  }
  if (o.durationMs === null && o.ops === null) o.durationMs = DEFAULT_DURATION_MS;
  if (!given.has('--seed') && base.seed === 0) o.seed = (Date.now() ^ (process.pid << 16)) >>> 0;
  // The profile picks mmu_lock's kind unless --lock says otherwise.
  if (!given.has('--lock') && o.lock === defaultOptions().lock) o.lock = profileLockKind(o.profile);
  o.lockOverride = lockOverrideOf(o);
  const mc = validateModelConfig(toModelConfig(o), BUG_NAMES, FIX_NAMES);
  checkProfileFeatures(mc);
  return o;
}

/** Scenarios whose migrator has no dirty-ring path (their loops harvest with KVM_GET_DIRTY_LOG only). */
export const RING_SCENARIOS_UNSUPPORTED = ['teardown', 'dirty-log-perf'];

/**
 * --dirty-log and --dirty-ring-size across flags (the profile is checked in
 * validateModelConfig, which replay runs too): the ring size needs the
 * ring; two scenarios have no ring path.
 */
function checkDirtyLog(o: RunOptions): void {
  const dl = o.dirtyLog ?? 'bitmap';
  if (o.dirtyRingSize != null && dl !== 'ring') {
    throw new ConfigError('--dirty-ring-size', `--dirty-ring-size applies to --dirty-log ring only, got --dirty-log ${dl}`);
  }
  if (dl === 'ring' && (o.manualProtect ?? 'off') !== 'off') {
    // QEMU enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 only without the ring
    // (kvm_init); with it, KVM_RESET_DIRTY_RINGS is what write-protects.
    throw new ConfigError('--manual-protect', `--manual-protect ${o.manualProtect} applies to the bitmap (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG); with --dirty-log ring the ring's reset write-protects: use --manual-protect off`);
  }
  if (dl === 'ring' && RING_SCENARIOS_UNSUPPORTED.includes(o.scenario)) {
    throw new ConfigError('--dirty-log', `--dirty-log ring is not modelled in --scenario ${o.scenario}; it runs in ${ALL_SCENARIOS.map((s) => s.name).filter((n) => !RING_SCENARIOS_UNSUPPORTED.includes(n)).join(', ')}`);
  }
}

/**
 * The lock kind a profile's kernel has: an rwlock from 5.18 (the arm64
 * profiles), the arm ticket spinlock before.
 */
export function profileLockKind(profile: ProfileName): LockKind {
  return resolveProtocol(profile, []).mmuRwlock ? 'rwlock' : 'ticket';
}

/** What the report says when --lock overrode the profile's lock kind (null: it did not). */
export function lockOverrideOf(o: RunOptions): string | null {
  const own = profileLockKind(o.profile);
  if (o.lock === own || (own === 'ticket' && o.lock === 'tas')) return null;
  return `--lock ${o.lock} overrides profile ${o.profile}'s mmu_lock, which is ${own === 'rwlock' ? 'an rwlock (faults take the read side)' : 'a spinlock'}`;
}

export function toModelConfig(o: RunOptions): ModelConfig {
  return {
    ...DEFAULT_MODEL,
    vcpus: o.vcpus,
    guestMem: o.guestMem,
    backing: o.backing,
    profile: o.profile,
    ...(o.arch ? { arch: o.arch } : {}),
    bugs: o.bugs,
    fixes: o.fixes,
    lock: o.lock,
    lockStats: o.lockStats,
    lockHoldSample: o.lockHoldSample ?? DEFAULT_MODEL.lockHoldSample,
    memPrealloc: o.memPrealloc ?? false,
    reschedGranule: o.reschedGranule ?? RESCHED_GRANULE_DEFAULT,
    ...((o.manualProtect ?? 'off') !== 'off' ? { manualProtect: o.manualProtect } : {}),
    ...((o.eagerSplitChunk ?? 0) !== 0 ? { eagerSplitChunk: o.eagerSplitChunk } : {}),
    // sim mode: cond_resched_lock() drops at every call and the scheduler decides who runs
    condReschedEvery: o.mode === 'sim' ? 1 : undefined,
    ...(o.dirtyLog === 'ring' ? { dirtyLog: 'ring' as const, ...(o.dirtyRingSize != null ? { dirtyRingSize: o.dirtyRingSize } : {}) } : {}),
  };
}

/**
 * The flags that make this run, every one that changes it and none that does
 * not apply: the identity of the run always, tuning flags when they differ
 * from their default. `pretty` writes sizes and durations with units (the
 * rerun line); otherwise in bytes and ms (exact, for replay).
 */
export function runArgsOf(o: RunOptions, pretty = true): string[] {
  const d = defaultOptions();
  const ms = (n: number): string => (pretty ? formatDuration(n) : `${n}ms`);
  const a: string[] = ['--scenario', o.scenario, '--profile', o.profile];
  if (o.arch) a.push('--arch', o.arch);
  for (const b of o.bugs) a.push('--bug', b);
  for (const f of o.fixes ?? []) a.push('--fix', f);
  a.push('--mode', o.mode);
  // Flags that do not apply to the mode are written only when they differ
  // from their default, so that validation names them.
  if (o.mode === 'sim' || o.sched !== d.sched) a.push('--sched', o.sched);
  if (o.sched === 'pct' ? o.mode === 'sim' : o.pctDepth !== d.pctDepth) a.push('--pct-depth', String(o.pctDepth));
  if (o.chaos !== d.chaos) a.push('--chaos', String(o.chaos));
  a.push(
    '--vcpus', String(o.vcpus),
    '--guest-mem', pretty ? formatBytes(o.guestMem) : String(o.guestMem),
    '--backing', o.backing,
    '--write-pct', String(o.writePct),
    '--lock', o.lock,
  );
  if (o.ops !== null) a.push('--ops', String(o.ops));
  if (o.durationMs !== null) a.push('--duration', ms(o.durationMs));
  if (o.checkEveryMs !== d.checkEveryMs) a.push('--check-every', ms(o.checkEveryMs));
  if (o.checkEverySteps !== d.checkEverySteps) a.push('--check-steps', String(o.checkEverySteps));
  if (o.watchdogMs !== d.watchdogMs) a.push('--watchdog', ms(o.watchdogMs));
  if (!o.lockStats) a.push('--no-lock-stats');
  if (o.memPrealloc) a.push('--mem-prealloc');
  if ((o.reschedGranule ?? RESCHED_GRANULE_DEFAULT) !== RESCHED_GRANULE_DEFAULT) a.push('--resched-granule', pretty ? formatBytes(o.reschedGranule) : String(o.reschedGranule));
  if ((o.manualProtect ?? 'off') !== 'off') a.push('--manual-protect', o.manualProtect!);
  if ((o.eagerSplitChunk ?? 0) !== 0) a.push('--eager-split-chunk', pretty ? formatBytes(o.eagerSplitChunk!) : String(o.eagerSplitChunk));
  if (o.lockHoldSample !== d.lockHoldSample) a.push('--lock-hold-sample', String(o.lockHoldSample));
  if (o.crashActor !== null) a.push('--crash-actor', o.crashActor);
  if (o.hostOps != null) a.push('--host-ops', o.hostOps.length ? o.hostOps.join(',') : 'none');
  if (o.maxPreemptions != null) a.push('--max-preemptions', String(o.maxPreemptions));
  if (o.stopStep != null) a.push('--stop-step', String(o.stopStep));
  if ((o.dirtyLog ?? 'bitmap') !== 'bitmap') a.push('--dirty-log', o.dirtyLog as string);
  if (o.dirtyRingSize != null) a.push('--dirty-ring-size', String(o.dirtyRingSize));
  a.push('--seed', String(o.seed));
  return a;
}

/** The exact command line that repeats this run. */
export function replayCommand(o: RunOptions): string {
  return ['s2stress run', ...runArgsOf(o)].join(' ');
}

type FieldType = 'string' | 'int' | 'number' | 'boolean' | 'strings';

/** A report's `config` fields: type, whether required, and the flag each stands for. */
const CONFIG_FIELDS: readonly { field: keyof RunOptions; type: FieldType; flag: string; required: boolean; nullable?: boolean }[] = [
  { field: 'scenario', type: 'string', flag: '--scenario', required: true },
  { field: 'profile', type: 'string', flag: '--profile', required: true },
  { field: 'arch', type: 'string', flag: '--arch', required: false, nullable: true },
  { field: 'bugs', type: 'strings', flag: '--bug', required: true },
  { field: 'fixes', type: 'strings', flag: '--fix', required: false },
  { field: 'mode', type: 'string', flag: '--mode', required: true },
  { field: 'sched', type: 'string', flag: '--sched', required: false },
  { field: 'pctDepth', type: 'int', flag: '--pct-depth', required: false },
  { field: 'chaos', type: 'number', flag: '--chaos', required: false },
  { field: 'vcpus', type: 'int', flag: '--vcpus', required: true },
  { field: 'guestMem', type: 'int', flag: '--guest-mem', required: true },
  { field: 'backing', type: 'string', flag: '--backing', required: true },
  { field: 'writePct', type: 'number', flag: '--write-pct', required: true },
  { field: 'lock', type: 'string', flag: '--lock', required: true },
  { field: 'durationMs', type: 'number', flag: '--duration', required: true, nullable: true },
  { field: 'ops', type: 'int', flag: '--ops', required: true, nullable: true },
  { field: 'seed', type: 'int', flag: '--seed', required: true },
  { field: 'checkEveryMs', type: 'number', flag: '--check-every', required: false },
  { field: 'checkEverySteps', type: 'int', flag: '--check-steps', required: false },
  { field: 'watchdogMs', type: 'number', flag: '--watchdog', required: false },
  { field: 'lockStats', type: 'boolean', flag: '--no-lock-stats', required: false },
  { field: 'memPrealloc', type: 'boolean', flag: '--mem-prealloc', required: false },
  { field: 'reschedGranule', type: 'int', flag: '--resched-granule', required: false },
  { field: 'manualProtect', type: 'string', flag: '--manual-protect', required: false },
  { field: 'eagerSplitChunk', type: 'int', flag: '--eager-split-chunk', required: false },
  { field: 'lockHoldSample', type: 'int', flag: '--lock-hold-sample', required: false },
  { field: 'crashActor', type: 'string', flag: '--crash-actor', required: false, nullable: true },
  { field: 'stopStep', type: 'int', flag: '--stop-step', required: false, nullable: true },
  { field: 'dirtyLog', type: 'string', flag: '--dirty-log', required: false },
  { field: 'dirtyRingSize', type: 'int', flag: '--dirty-ring-size', required: false, nullable: true },
  { field: 'hostOps', type: 'strings', flag: '--host-ops', required: false, nullable: true },
  { field: 'maxPreemptions', type: 'int', flag: '--max-preemptions', required: false, nullable: true },
  { field: 'simCpu', type: 'string', flag: '--sim-cpu', required: false },
];

function typeOk(v: unknown, t: FieldType): boolean {
  switch (t) {
    case 'string':
      return typeof v === 'string';
    case 'int':
      return typeof v === 'number' && Number.isFinite(v);
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'strings':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
  }
}

const TYPE_WORDS: Record<FieldType, string> = { string: 'a string', int: 'a whole number', number: 'a number', boolean: 'true or false', strings: 'an array of strings' };

/**
 * A report's `config` validated exactly as `run` validates its flags (the
 * configuration is turned back into the flags and parsed), plus the types
 * JSON can get wrong. Throws ConfigError naming the field (`config.seed`).
 * `extra` are further flags (display flags, for replay).
 */
/** The options the library's run() takes: RunOptions' fields (CONFIG_FIELDS), any left out at their defaults. */
export function optionsFromObject(input: unknown): RunOptions {
  if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
    const known = new Set<string>(CONFIG_FIELDS.map((f) => f.field as string));
    for (const k of Object.keys(input)) {
      if (!known.has(k)) throw new ConfigError(k, `run() has no option '${k}'; known: ${[...known].sort().join(', ')}`);
    }
    const given = input as Partial<RunOptions>;
    const o: Record<string, unknown> = { ...defaultOptions(), ...given };
    // As the CLI: the length of a run by its mode, the lock by the profile, a fresh seed (the report keeps it).
    if (given.ops == null && given.durationMs == null) {
      if (given.mode === 'sim') o.ops = DEFAULT_SIM_OPS;
      else o.durationMs = DEFAULT_DURATION_MS;
    }
    if (given.lock === undefined && typeof o.profile === 'string' && (PROFILES as readonly string[]).includes(o.profile)) o.lock = profileLockKind(o.profile as ProfileName);
    if (given.seed === undefined) o.seed = (Date.now() ^ (process.pid << 16)) >>> 0;
    return optionsFromReportConfig(o, [], {}, 'api');
  }
  return optionsFromReportConfig(input, [], {}, 'api');
}

export function optionsFromReportConfig(config: unknown, extra: readonly string[] = [], overrides: Partial<RunOptions> = {}, naming: 'report' | 'api' = 'report'): RunOptions {
  // How a field is named in errors: a report's config field, or the library's run() option.
  const label = (field: string, flag: string): string => (naming === 'report' ? `report field config.${field} (${flag})` : `option ${field} (${flag})`);
  const setting = (field: string): string => (naming === 'report' ? `config.${field}` : field);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError('config', naming === 'report' ? `the report's config must be an object (the run's configuration), got ${JSON.stringify(config) ?? String(config)}` : `run() takes an object of options, got ${JSON.stringify(config) ?? String(config)}`);
  }
  const c = config as Record<string, unknown>;
  const typed: RunOptions = defaultOptions();
  for (const f of CONFIG_FIELDS) {
    const has = Object.prototype.hasOwnProperty.call(c, f.field) && c[f.field] !== undefined;
    if (!has) {
      if (f.required) throw new ConfigError(setting(f.field), `report field config.${f.field} is missing (${f.flag}); a report written by s2stress run has it`);
      continue;
    }
    const v = c[f.field];
    if (v === null && f.nullable) {
      (typed as unknown as Record<string, unknown>)[f.field] = null;
      continue;
    }
    if (!typeOk(v, f.type)) {
      throw new ConfigError(setting(f.field), `${label(f.field, f.flag)} must be ${TYPE_WORDS[f.type]}${f.nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
    }
    (typed as unknown as Record<string, unknown>)[f.field] = v;
  }
  if (typed.durationMs === null && typed.ops === null) {
    throw new ConfigError(setting('durationMs'), naming === 'report' ? 'report fields config.durationMs and config.ops are both null: one of them says how long the run was' : 'options durationMs and ops are both null: one of them says how long the run is');
  }
  Object.assign(typed, overrides);
  // An unknown profile is named by parseRunArgs below, not met here.
  typed.lockOverride = (PROFILES as readonly string[]).includes(typed.profile) ? lockOverrideOf(typed) : null;
  const args = runArgsOf(typed, false);
  // Where the actors ran is not part of the run: a report's is not replayed
  // (the replaying machine may have other CPUs); the library's run() takes it.
  if (naming === 'api' && typed.simCpu !== undefined && typed.simCpu !== 'auto') args.push('--sim-cpu', typed.simCpu);
  try {
    return parseRunArgs([...args, ...extra]);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    if (extra.includes(e.setting) || extra.some((x) => x.startsWith(`${e.setting}=`))) throw e;
    const f = CONFIG_FIELDS.find((x) => x.flag === e.setting);
    if (!f) throw e;
    throw new ConfigError(setting(f.field), `${label(f.field, f.flag)}: ${e.message}`);
  }
}
