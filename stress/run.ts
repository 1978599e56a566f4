/**
 * The run orchestration in threads mode: create the VM, start one piscina
 * worker per actor, stop the world periodically to run the quiescence checks,
 * watch progress, and end the run cleanly (every worker stopped, none left
 * behind) with a report.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { createVm, actorName } from '../src/vm.js';
import type { Kvm } from '../src/kvm/kvm.js';
import { ACTOR, CTRL } from '../src/shm/layout.js';
import { LOCKW } from '../src/sync/spinlock.js';
import { LOCK_SITE_NAMES } from '../src/sync/locksites.js';
import { bumpControl } from '../src/actors/control.js';
import { checkStoppedWorld, liveViolations, type Violation } from '../src/check/invariants.js';
import { CNT } from '../src/check/names.js';
import { DEFAULT_HOLD_SAMPLE, LockStats, emptyLockReport, mergeLockStats, type LockStatsSnapshot } from '../src/sync/lockstat.js';
import { Actor } from '../src/sync/actor.js';
import { FreeSched } from '../src/sync/sched.js';
import { actorSeed } from '../src/actors/params.js';
import type { ActorResult, ActorRole, ActorTask } from '../workers/actor.js';
import { type RunOptions, replayCommand, toModelConfig } from './options.js';
import { type ScenarioSpec, actorParams, findScenario } from './scenarios.js';
import { Timeline, VERSION, collectCounters, collectTraces, migrationSummary, progressOf, type Report } from './report.js';

export interface RunHooks {
  /** Called every statusEveryMs with a one-line status. */
  onStatus?: (line: string, final: boolean) => void;
  /** Period of onStatus, ms (default 5000: a plain line; a terminal redraws about twice a second). */
  statusEveryMs?: number;
  /** Called once every actor is running: the run clock starts now. */
  onStart?: (line: string) => void;
  /**
   * Abort (a signal): the run stops cleanly and still reports. The abort
   * reason, when it is a signal's name (SIGINT, SIGTERM, SIGHUP), sets the
   * exit code (128 + its number).
   */
  signal?: AbortSignal;
  /**
   * Called at every poll of the orchestrator (~10 ms) while the run goes on,
   * with the time since launch and the live counters: for steady-state
   * rates that leave out the workers' start-up and shutdown (s2stress bench).
   */
  onTick?: (sinceLaunchMs: number, accesses: number, faults: number) => void;
}

/** dist/workers/actor.js, found from this file whether it runs compiled or from source. */
export function workerPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) {
      const p = join(dir, 'dist', 'workers', 'actor.js');
      if (!existsSync(p)) throw new Error(`worker file ${p} is missing: run \`npm run build\` first`);
      return p;
    }
    dir = dirname(dir);
  }
  throw new Error('cannot find the package root (package.json) to locate dist/workers/actor.js');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Who holds mmu_lock, for the watchdog and the deadlock report: the (write)
 * owner, and an rwlock's read holders with their sites ("none (read-held by
 * vcpu1 at fault)"): a reader that never unlocks is named too.
 */
export function mmuLockHolder(kvm: Kvm): string {
  const lock = kvm.mmuLock;
  const owner = actorName(kvm, lock.owner());
  const readers = lock.readHolders();
  if (readers.length === 0) return owner;
  const site = (a: number): string => LOCK_SITE_NAMES[lock.readSite(a)] ?? `${lock.readSite(a)}`;
  return `${owner} (read-held by ${readers.map((a) => `${actorName(kvm, a)} at ${site(a)}`).join(', ')})`;
}

/** What word an actor waits on, in words a kernel developer reads. */
export function describeWait(kvm: Kvm, word: number): string {
  const L = kvm.layout;
  if (word < 0) return 'running';
  if (word === CTRL.CONTROL_GEN) return 'parked/idle at a safe point';
  if (word === CTRL.VCPUS_PAUSED) return 'waiting for the vCPUs to pause';
  if (word >= L.mmuLock && word < L.mmuLock + 8) {
    const owner = kvm.mmuLock.owner();
    const site = Atomics.load(kvm.m, L.mmuLock + LOCKW.OWNER_SITE);
    if (owner < 0 && kvm.mmuLock.readers() > 0) return `spinning on mmu_lock (held by ${mmuLockHolder(kvm)})`;
    return `spinning on mmu_lock (held by ${actorName(kvm, owner)} at ${LOCK_SITE_NAMES[site] ?? site})`;
  }
  if (word >= L.zoneLock && word < L.zoneLock + 8) return 'spinning on the zone lock';
  if (word >= L.slotsLock && word < L.slotsLock + 8) return 'waiting for slots_lock';
  if (word >= L.tableLock && word < L.tableLock + 8) return 'spinning on the table pool lock';
  if (word >= L.srcuReaders && word < L.srcuReaders + L.nActors) return `in synchronize_srcu, waiting for ${actorName(kvm, word - L.srcuReaders)}'s read section`;
  if (word >= L.actors && word < L.actors + L.nActors * 8) {
    const a = Math.floor((word - L.actors) / 8);
    return `in a TLB flush, waiting for ${actorName(kvm, a)} to finish its access`;
  }
  if (word >= L.hpte && word < L.hpte + L.pages) return `waiting on the host PTE of gfn ${word - L.hpte} (locked or under migration)`;
  return `waiting on word ${word}`;
}

export function describeActors(kvm: Kvm): string {
  const parts: string[] = [];
  for (let a = 0; a < kvm.layout.nActors - 1; a++) {
    const w = Atomics.load(kvm.m, kvm.actorWord(a, ACTOR.WAITING_ON)) - 1;
    parts.push(`${actorName(kvm, a)}: ${describeWait(kvm, w)}`);
  }
  return parts.join('; ');
}

interface ActorSpec {
  role: ActorRole;
  id: number;
}

/** Everything a run of either mode starts from: the VM, the actors, their tasks in a pool. */
export interface Launched {
  kvm: Kvm;
  pool: Piscina;
  specs: ActorSpec[];
  tasks: Promise<void>[];
  results: ActorResult[];
  error(): string | null;
  /** Set once the orchestrator tears the pool down: termination errors are expected then. */
  stopping: boolean;
  /** The orchestrator as an actor: it takes mmu_lock for the stop-the-world checks. */
  checker: Actor;
  /** Its lock statistics (the `check` row), null with --no-lock-stats. */
  checkerStats: LockStats | null;
  /** Threads mode: the start gate, [workers booted, gate open] (null in sim mode, whose scheduler starts the actors). */
  gate: Int32Array | null;
}

/** Live pools, for a last clean-up before the process exits (see stress/cli.ts). */
const livePools = new Set<Piscina>();

/** Destroy any pool still alive (a run cut short by an exception). Resolves within `ms`. */
export async function destroyLivePools(ms = 2000): Promise<void> {
  if (livePools.size === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled([...livePools].map((p) => p.destroy())),
    new Promise<void>((r) => {
      timer = setTimeout(r, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
  livePools.clear();
}

async function destroyPool(run: Launched): Promise<void> {
  run.stopping = true;
  openGate(run);
  await run.pool.destroy();
  livePools.delete(run.pool);
}

/** Let the actors waiting at the start gate run (or return, once the run has ended). */
function openGate(run: Launched): void {
  if (!run.gate) return;
  Atomics.store(run.gate, 1, 1);
  Atomics.notify(run.gate, 1);
}

/** Longest wait for the workers to boot before the run counts as a harness failure (or the watchdog period, if longer). */
export const BOOT_TIMEOUT_MS = 120_000;

/**
 * Wait until every actor's worker has booted and waits at the start gate.
 * Returns null, or why not (a worker failed, the run was aborted, timeout).
 */
async function waitBooted(run: Launched, signal: AbortSignal | undefined, timeoutMs: number): Promise<'aborted' | 'failed' | 'timeout' | null> {
  const g = run.gate;
  if (!g) return null;
  const n = run.specs.length;
  const limit = performance.now() + timeoutMs;
  for (;;) {
    const booted = Atomics.load(g, 0);
    if (booted >= n) return null;
    if (run.error()) return 'failed';
    if (signal?.aborted) return 'aborted';
    if (performance.now() > limit) return 'timeout';
    const w = Atomics.waitAsync(g, 0, booted, 50);
    if (w.async) await w.value;
  }
}

/** What a scenario's migrator must have completed for the run to count as having done its work. */
export interface MigrationWork {
  /** What is missing when none was done, in words: "no migration completed or cancelled". */
  none: string;
  done(kvm: Kvm): number;
}

/** Scenarios whose migrator is a harvest loop (logging on, rounds back to back): a harvest round is its unit of work. */
const HARVEST_LOOP_SCENARIOS = new Set(['fault-storm']);

export function migrationWorkOf(s: ScenarioSpec): MigrationWork | null {
  if (s.migrator === 'idle') return null;
  if (s.migrator === 'selftest') return { none: 'no dirty_log_test round', done: (kvm) => kvm.counter(CNT.selftestRounds) };
  if (HARVEST_LOOP_SCENARIOS.has(s.name)) return { none: 'no dirty-log harvest round', done: (kvm) => kvm.counter(CNT.rounds) };
  return { none: 'no migration completed or cancelled', done: (kvm) => kvm.counter(CNT.migrations) + kvm.counter(CNT.cancels) };
}

/** Null when the run did its work (some guest accesses, and the scenario's migration work); else what it did not do. */
export function missingWork(kvm: Kvm, o: RunOptions): string | null {
  const acc = kvm.counter(CNT.accesses);
  if (acc === 0) return 'no guest access';
  const scenario = findScenario(o.scenario);
  const mw = scenario ? migrationWorkOf(scenario) : null;
  if (mw && mw.done(kvm) === 0) return `${mw.none} (scenario ${o.scenario}; ${acc} guest accesses)`;
  return null;
}

export function launch(o: RunOptions, sim?: ActorTask['sim']): Launched {
  const scenario = findScenario(o.scenario);
  if (!scenario) throw new Error(`unknown scenario ${o.scenario}`);
  const cfg = toModelConfig(o);
  const checkerStats = cfg.lockStats ? new LockStats(cfg.lockHoldSample ?? DEFAULT_HOLD_SAMPLE, actorSeed(o.seed, 3000)) : null;
  const kvm = createVm(cfg, checkerStats);
  const m = kvm.m;
  const L = kvm.layout;
  const opsPerVcpu = o.ops !== null ? Math.ceil(o.ops / o.vcpus) : 0;
  const params = actorParams(scenario, { seed: o.seed, writePct: o.writePct, opsPerVcpu, chaos: o.mode === 'sim' ? 0 : o.chaos, hostOps: o.hostOps });

  const specs: ActorSpec[] = [];
  for (let v = 0; v < L.vcpus; v++) specs.push({ role: 'vcpu', id: v });
  specs.push({ role: 'hostmm', id: L.hostActor });
  specs.push({ role: 'migrator', id: L.migrator });
  Atomics.store(m, CTRL.ACTORS_RUNNING, specs.length);
  const gate = sim ? null : new Int32Array(new SharedArrayBuffer(8));

  const pool = new Piscina({
    filename: workerPath(),
    minThreads: specs.length,
    maxThreads: specs.length,
    concurrentTasksPerWorker: 1,
    idleTimeout: 60_000,
    atomics: 'disabled',
    // Small heaps: the actors allocate nothing on their hot paths, and 64
    // vCPUs of default-sized isolates alone would pass 1 GiB resident.
    resourceLimits: { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 2, stackSizeMb: 1 },
  });
  livePools.add(pool);
  let harnessError: string | null = null;
  const results: ActorResult[] = [];
  const launched = { stopping: false } as Launched;
  const tasks = specs.map((s) => {
    const task: ActorTask = {
      role: s.role,
      id: s.id,
      cfg,
      params,
      sab: kvm.sab,
      crashAfterTicks: o.crashActor === actorName(kvm, s.id) ? 2 : 0,
      sim,
      gate: gate ? (gate.buffer as SharedArrayBuffer) : undefined,
    };
    return pool.run(task).then(
      (r: ActorResult) => {
        results.push(r);
      },
      (e: unknown) => {
        if (launched.stopping) return;
        const err = e instanceof Error ? e : new Error(String(e));
        // The message, then the worker's stack (printed with --verbose).
        const frames = (err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
        if (!harnessError) harnessError = [`worker ${actorName(kvm, s.id)} failed: ${err.message}`, ...frames].join('\n');
        Atomics.store(m, CTRL.END, 1);
        bumpControl(m);
      },
    );
  });
  const checker = new Actor(L.checker, new FreeSched(m));
  return Object.assign(launched, { kvm, pool, specs, tasks, results, error: () => harnessError, checker, checkerStats, gate });
}

/** How long the other workers have to return after one failed (then they are terminated). */
export const CRASH_GRACE_MS = 2000;

/** Stop every actor and the pool; returns a harness error if some worker would not stop. */
export async function shutdown(run: Launched, o: RunOptions): Promise<string | null> {
  const m = run.kvm.m;
  Atomics.store(m, CTRL.STOP, 0);
  Atomics.store(m, CTRL.PAUSE_VCPUS, 0);
  Atomics.store(m, CTRL.END, 1);
  bumpControl(m);
  openGate(run);
  // Workers return at their next safe point; on a loaded machine that can
  // take seconds (measured: 5 s was not always enough with another 64-vCPU
  // run on the same 2 cores). After a worker failed, the others may wait
  // for good on what it held (mmu_lock, a flush it never acknowledged): they
  // get a short grace, then the pool is destroyed (before: the whole
  // watchdog, a minute in the tests, went by first).
  const wait = run.error() ? CRASH_GRACE_MS : Math.max(10_000, o.watchdogMs);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    Promise.all(run.tasks).then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), wait);
    }),
  ]);
  clearTimeout(timer);
  const before = run.error();
  await destroyPool(run);
  if (before) return before;
  if (timedOut && !run.error()) return `workers did not stop within ${wait} ms after the end of the run: ${describeActors(run.kvm)}`;
  return run.error();
}

/** A deadlocked run cannot finish: terminate the workers (they are blocked for good). */
export async function terminate(run: Launched): Promise<string | null> {
  const before = run.error();
  await destroyPool(run);
  return before;
}

/** Signal numbers of the signals that interrupt a run (exit code 128 + the number). */
export const SIGNAL_NUMBERS: Readonly<Record<string, number>> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** The signal an abort stands for: its reason when that is a signal's name, else SIGINT (Ctrl-C). */
export function abortSignalName(signal: AbortSignal | undefined): string | null {
  if (!signal?.aborted) return null;
  const r = signal.reason;
  return typeof r === 'string' && SIGNAL_NUMBERS[r] !== undefined ? r : 'SIGINT';
}

export interface RunEnd {
  /** Violations the orchestrator found (live ones are read from shared memory). */
  found: Violation[];
  harnessError: string | null;
  elapsedMs: number;
  startupMs: number;
  quiescentChecks: number;
  /** The signal that interrupted the run, null if none. */
  signal: string | null;
  schedule: Report['schedule'];
  /** Run the last stopped-world check (every actor has returned). */
  finalCheck: boolean;
  /** Throughput samples (Report.timeline). */
  timeline?: Report['timeline'];
  /** Sim mode: the CPU the actors were pinned to (--sim-cpu), null if none. */
  pinnedCpu?: number | null;
  /** The run was cut short on purpose (a signal, --stop-step): not doing its work is then no failure. */
  cutShort: boolean;
}

export function buildReport(run: Launched, o: RunOptions, end: RunEnd): Report {
  const kvm = run.kvm;
  const { found, signal } = end;
  let harnessError = end.harnessError;
  let quiescentChecks = end.quiescentChecks;
  const all = [...liveViolations(kvm), ...found];
  // Every actor has returned: one last check of the stopped world, also after
  // a live violation (it often names the cause: the leaked table, the stale
  // TLB entry). Skipped when a periodic check already reported.
  if (end.finalCheck && !harnessError && !found.some((v) => v.actor === 'orchestrator' && v.invariant !== 'progress')) {
    quiescentChecks++;
    all.push(...checkStoppedWorld(kvm, run.checker));
  }
  const snaps = run.results
    .slice()
    .sort((a, b) => a.id - b.id)
    .map((r) => r.lockStats)
    .filter((x): x is LockStatsSnapshot => x !== null);
  if (run.checkerStats) snaps.push(run.checkerStats.snapshot());
  const failed = all.length > 0;
  // A run that did not do its work proves nothing: never a pass.
  if (!failed && !harnessError && !end.cutShort) {
    const missing = missingWork(kvm, o);
    if (missing) {
      const length = o.ops !== null ? `--ops ${o.ops}` : `${(end.elapsedMs / 1000).toFixed(1)} s`;
      harnessError = `ran no work: ${missing} in ${length}; give the run ${o.mode === 'sim' || o.ops !== null ? 'more --ops' : 'a longer --duration'}${o.mode === 'threads' ? ' (or a less loaded machine)' : ''}`;
    }
  }
  const exitCode = harnessError ? 3 : failed ? 1 : signal ? 128 + SIGNAL_NUMBERS[signal] : 0;
  return {
    tool: 's2stress',
    version: VERSION,
    result: failed || harnessError ? 'fail' : 'pass',
    exitCode,
    config: o,
    arch: kvm.proto.arch,
    violations: all,
    counters: collectCounters(kvm),
    migration: migrationSummary(kvm),
    lock: o.lockStats ? mergeLockStats(o.lock, snaps) : emptyLockReport(o.lock),
    schedule: end.schedule,
    // An interrupted sim run is repeated up to the step it stopped at.
    replay: replayCommand(end.schedule?.stoppedAtStep != null ? { ...o, stopStep: end.schedule.stoppedAtStep } : o),
    replayNote:
      o.mode === 'sim'
        ? ''
        : 'threads mode: the same seeds and configuration are rerun, but thread interleavings are not reproducible; use --mode sim for an exact replay',
    elapsedMs: end.elapsedMs,
    startupMs: end.startupMs,
    pinnedCpu: end.pinnedCpu ?? null,
    quiescentChecks,
    interrupted: signal !== null,
    signal,
    error: harnessError,
    traces: failed || harnessError ? collectTraces(kvm) : {},
    timeline: [...(end.timeline ?? []), { ms: Math.round(end.elapsedMs * 10) / 10, accesses: kvm.counter(CNT.accesses), faults: kvm.counter(CNT.faults) }],
  };
}

/** The live status line: counters that read one way only. */
export function statusLine(kvm: Kvm, sinceStartMs: number, accPerSec: number, faultsPerSec: number, violations: number): string {
  return `[${(sinceStartMs / 1000).toFixed(1)}s] ${Math.round(accPerSec)} accesses/s, ${Math.round(faultsPerSec)} faults/s, migrations ${kvm.counter(CNT.migrations)} done, ${kvm.counter(CNT.cancels)} cancelled, ${kvm.counter(CNT.rounds)} rounds, violations ${violations}`;
}

/** Run a stress run in threads mode. Never throws for run-time failures: they are in the report (exit 3). */
export async function runThreads(o: RunOptions, hooks: RunHooks = {}): Promise<Report> {
  const launchedAt = performance.now();
  const run = launch(o);
  const { kvm } = run;
  const m = kvm.m;
  const L = kvm.layout;
  const violations: Violation[] = [];
  let bootError: string | null = null;
  // The run clock and the watchdog start when every actor is running.
  const bootTimeoutMs = Math.max(BOOT_TIMEOUT_MS, o.watchdogMs);
  const boot = await waitBooted(run, hooks.signal, bootTimeoutMs);
  if (boot === 'timeout') bootError = `the workers did not start within ${bootTimeoutMs / 1000} s (${Atomics.load(run.gate!, 0)} of ${run.specs.length} booted)`;
  const start = performance.now();
  const startupMs = start - launchedAt;
  if (boot === null) {
    openGate(run);
    hooks.onStart?.(`s2stress: running: ${L.vcpus} vCPUs, host MM and migrator started (${Math.round(startupMs)} ms to start)`);
  }
  const deadline = o.durationMs !== null ? start + o.durationMs : Infinity;
  // Past the deadline (or the vCPUs' --ops), a run goes on until it has done
  // its work, for at most this long (then it reports that it did not).
  const graceMs = o.watchdogMs;
  let vcpusDoneAt = -1;
  let quiescentChecks = 0;
  let lastCheck = start;
  let interrupted = hooks.signal?.aborted ?? false;
  let lastProgress = progressOf(kvm);
  let lastProgressAt = new Array(L.nActors).fill(start);
  let lastStatus = start;
  let lastAccesses = 0;
  let lastFaults = 0;
  const statusEvery = hooks.statusEveryMs ?? 5000;
  const timeline = new Timeline(Math.max(20, (o.durationMs ?? 10_000) / 100));

  const stopWorld = async (): Promise<boolean> => {
    const limit = performance.now() + o.watchdogMs;
    while (Atomics.load(m, CTRL.PARKED) !== 0) {
      if (performance.now() > limit || run.error()) return false;
      await sleep(1);
    }
    Atomics.store(m, CTRL.STOP, 1);
    bumpControl(m);
    for (;;) {
      const parked = Atomics.load(m, CTRL.PARKED);
      const running = Atomics.load(m, CTRL.ACTORS_RUNNING);
      if (parked >= running) return true;
      if (run.error()) return false;
      if (performance.now() > limit) return false;
      const w = Atomics.waitAsync(m, CTRL.PARKED, parked, 20);
      if (w.async) await w.value;
    }
  };
  const resumeWorld = (): void => {
    Atomics.store(m, CTRL.STOP, 0);
    bumpControl(m);
  };

  const onAbort = (): void => {
    interrupted = true;
  };
  hooks.signal?.addEventListener('abort', onAbort);

  try {
    while (boot === null) {
      await sleep(10);
      const now = performance.now();
      if (run.error() || interrupted) break;
      if (Atomics.load(m, CTRL.FAILED) !== 0) break;
      if (o.ops !== null && vcpusDoneAt < 0 && Atomics.load(m, CTRL.VCPUS_DONE) >= L.vcpus) vcpusDoneAt = now;
      const endAt = o.ops !== null ? vcpusDoneAt : deadline;
      if (endAt >= 0 && now >= endAt) {
        if (missingWork(kvm, o) === null || now >= endAt + graceMs) break;
      }

      if (now - lastCheck >= o.checkEveryMs) {
        const ok = await stopWorld();
        if (!ok) {
          if (!run.error()) {
            violations.push({
              invariant: 'progress',
              message: `stop-the-world barrier not reached within ${o.watchdogMs} ms (${Atomics.load(m, CTRL.PARKED)} of ${Atomics.load(m, CTRL.ACTORS_RUNNING)} parked): ${describeActors(kvm)}`,
              actor: 'orchestrator',
            });
          }
          break;
        }
        quiescentChecks++;
        const found = checkStoppedWorld(kvm, run.checker);
        resumeWorld();
        lastCheck = performance.now();
        if (found.length) {
          violations.push(...found);
          break;
        }
      }

      // progress watchdog, per actor
      const prog = progressOf(kvm);
      for (let a = 0; a < L.nActors - 1; a++) {
        if (prog[a] !== lastProgress[a]) {
          lastProgress[a] = prog[a];
          lastProgressAt[a] = now;
          continue;
        }
        const waiting = Atomics.load(m, kvm.actorWord(a, ACTOR.WAITING_ON)) - 1;
        const idle = waiting === CTRL.CONTROL_GEN || waiting === CTRL.VCPUS_PAUSED || Atomics.load(m, kvm.actorWord(a, ACTOR.PARKED)) === 1;
        if (idle) {
          lastProgressAt[a] = now;
          continue;
        }
        if (now - lastProgressAt[a] > o.watchdogMs) {
          violations.push({
            invariant: 'progress',
            message: `${actorName(kvm, a)} made no progress for ${Math.round(now - lastProgressAt[a])} ms: ${describeWait(kvm, waiting)}; mmu_lock held by ${mmuLockHolder(kvm)}. All actors: ${describeActors(kvm)}`,
            actor: actorName(kvm, a),
          });
        }
      }
      if (violations.length) break;

      timeline.sample(now - start, kvm.counter(CNT.accesses), kvm.counter(CNT.faults));
      if (hooks.onTick) hooks.onTick(now - start, kvm.counter(CNT.accesses), kvm.counter(CNT.faults));
      if (hooks.onStatus && now - lastStatus >= statusEvery) {
        const acc = kvm.counter(CNT.accesses);
        const flt = kvm.counter(CNT.faults);
        const dt = (now - lastStatus) / 1000;
        hooks.onStatus(statusLine(kvm, now - start, (acc - lastAccesses) / dt, (flt - lastFaults) / dt, Atomics.load(m, CTRL.VIOLATION_COUNT) + violations.length), false);
        lastStatus = now;
        lastAccesses = acc;
        lastFaults = flt;
      }
    }
  } finally {
    hooks.signal?.removeEventListener('abort', onAbort);
  }
  // End the run: every actor returns from its loop at the next safe point.
  const stuck = violations.some((v) => v.invariant === 'progress');
  const harnessError = stuck ? await terminate(run) : await shutdown(run, o);
  const elapsedMs = performance.now() - start;
  const signal = abortSignalName(hooks.signal);
  // All actors have returned: the world is stopped for good, one last check.
  return buildReport(run, o, {
    found: violations,
    harnessError: harnessError ?? bootError,
    elapsedMs,
    startupMs,
    quiescentChecks,
    signal,
    schedule: null,
    finalCheck: !stuck && boot === null,
    timeline: timeline.points,
    cutShort: signal !== null || boot !== null,
  });
}
