/**
 * The run orchestration in sim mode: the same actors and protocol code, one
 * actor at a time under a seeded strategy (src/sim/sched.ts). The main thread
 * holds the baton only when nobody else can run: then it runs the
 * stop-the-world checks (every actor parked), ends the run (every actor
 * done), or reports a deadlock that names who waits on what.
 */
import { CTRL } from '../src/shm/layout.js';
import { SCHEDULE_VERSION, SIM, SIMF, SimMain, SimState } from '../src/sim/sched.js';
import { checkStoppedWorld, type Violation } from '../src/check/invariants.js';
import { actorName } from '../src/vm.js';
import { bumpControl } from '../src/actors/control.js';
import type { RunOptions } from './options.js';
import { type RunHooks, abortSignalName, buildReport, describeWait, launch, mmuLockHolder, shutdown, terminate } from './run.js';
import { Timeline, type Report } from './report.js';
import { simCpuFor } from './cpus.js';
import { pinThreads } from '../src/sim/pin.js';
import { CNT } from '../src/check/names.js';

/** Scheduling points a guest access costs on average (for PCT's change points). */
export const STEPS_PER_ACCESS_ESTIMATE = 8;
/** Fewest scheduling steps between two stop-the-world checks in sim mode. */
export const SIM_CHECK_MIN_STEPS = 5000;

export async function runSim(o: RunOptions, hooks: RunHooks = {}): Promise<Report> {
  if (o.ops === null) throw new Error('sim mode needs --ops');
  const actors = o.vcpus + 2;
  const estimatedSteps = o.ops * STEPS_PER_ACCESS_ESTIMATE;
  const simCfg = {
    strategy: o.sched,
    seed: o.seed ^ 0x5eed,
    actors,
    pctDepth: o.pctDepth,
    estimatedSteps,
    // Stop-the-world checks often enough to see short-lived states (a stale
    // TLB entry lives until the next whole-VM flush), scaled with the guest.
    checkEverySteps: o.checkEverySteps > 0 ? o.checkEverySteps : Math.max(SIM_CHECK_MIN_STEPS, Math.floor(o.guestMem / 4096) * 2),
    vcpus: o.vcpus,
    stopAtStep: o.stopStep ?? null,
    maxPreemptions: o.maxPreemptions ?? null,
  };
  const launchedAt = performance.now();
  const st = SimState.create(simCfg);
  // Every actor thread on one CPU (--sim-cpu): a cheaper hand-over, the same schedule.
  const claim = simCpuFor(o.simCpu);
  const tids = claim ? new Int32Array(new SharedArrayBuffer(4 * actors)) : null;
  let pinned = false;
  let run: ReturnType<typeof launch>;
  try {
    run = launch(o, { sab: st.sab, cfg: simCfg, tids: tids ? (tids.buffer as SharedArrayBuffer) : undefined });
  } catch (e) {
    claim?.release();
    throw e;
  }
  const kvm = run.kvm;
  const m = kvm.m;
  const main = new SimMain(st, m);
  const violations: Violation[] = [];
  let interrupted = false;
  let quiescentChecks = 0;
  // A signal ends the run at the next end-of-run check the running actor
  // makes (every 1024 steps), whose step the report records: the replay
  // ends there too. Before the first step, at the first such check.
  const onAbort = (): void => {
    interrupted = true;
    Atomics.store(st.s, SIM.STOP_REQ, 1);
  };
  if (hooks.signal?.aborted) onAbort();
  hooks.signal?.addEventListener('abort', onAbort);
  let start = performance.now();
  let lastStatus = start;
  const statusEvery = hooks.statusEveryMs ?? 5000;
  // Reading the counters does not touch the schedule: replay is unchanged.
  const timeline = new Timeline(50);
  let begun = false;
  const giveUp = (): boolean => {
    if (begun) timeline.sample(performance.now() - start, kvm.counter(CNT.accesses), kvm.counter(CNT.faults));
    if (hooks.onStatus && performance.now() - lastStatus >= statusEvery) {
      lastStatus = performance.now();
      hooks.onStatus(
        `[${((lastStatus - start) / 1000).toFixed(1)}s] sim ${o.sched}: ${st.f[SIMF.STEPS]} steps, ${st.f[SIMF.SWITCHES]} switches, ${kvm.counter(CNT.accesses)} of ${o.ops} accesses, migrations ${kvm.counter(CNT.migrations)} done, ${kvm.counter(CNT.cancels)} cancelled`,
        false,
      );
    }
    return run.error() !== null;
  };
  try {
    await main.waitReady(actors, { get aborted() { return run.error() !== null; } });
    // Every actor has written its thread id and waits for the baton: pin them all at once.
    if (!run.error() && claim && tids) pinned = pinThreads([...tids], claim.cpu);
    if (!run.error()) {
      start = performance.now();
      lastStatus = start;
      hooks.onStart?.(`s2stress: running: ${o.vcpus} vCPUs, host MM and migrator started (sim ${o.sched}, ${Math.round(start - launchedAt)} ms to start)`);
      main.begin();
      begun = true;
      for (;;) {
        const got = await main.waitTurn(giveUp);
        if (!got) break;
        if (main.allDone()) break;
        const stop = Atomics.load(m, CTRL.STOP) !== 0;
        const end = Atomics.load(m, CTRL.END) !== 0;
        if (stop && !end && main.allParked()) {
          quiescentChecks++;
          const found = checkStoppedWorld(kvm, run.checker);
          violations.push(...found);
          if (found.length) Atomics.store(m, CTRL.END, 1);
          Atomics.store(m, CTRL.STOP, 0);
          bumpControl(m);
          if (!main.resume()) break;
          continue;
        }
        // Nobody can run and it is not a stop-the-world: a deadlock.
        const who = main
          .blocked()
          .map(([a, w]) => `${actorName(kvm, a)}: ${describeWait(kvm, w)}`)
          .join('; ');
        violations.push({
          invariant: 'progress',
          message: `deadlock at step ${st.f[SIMF.STEPS]}: every actor is blocked; mmu_lock held by ${mmuLockHolder(kvm)}. ${who}`,
          actor: 'orchestrator',
        });
        break;
      }
    }
  } finally {
    hooks.signal?.removeEventListener('abort', onAbort);
    // The claim only balances runs over the CPUs: given back as the run ends, also when it throws.
    claim?.release();
  }
  if (st.s[SIM.LIVELOCK]) {
    violations.push({
      invariant: 'progress',
      message: `livelock: no actor completed any work for ${st.f[SIMF.STEPS] - st.f[SIMF.PROGRESS_AT]} scheduling steps`,
      actor: 'orchestrator',
    });
  }
  const deadlocked = violations.some((v) => v.invariant === 'progress');
  if (!deadlocked && !run.error()) {
    // Let every actor see the end and return, still one at a time.
    Atomics.store(m, CTRL.END, 1);
    bumpControl(m);
    while (!main.allDone()) {
      if (!main.resume()) break;
      if (!(await main.waitTurn(() => run.error() !== null))) break;
    }
  }
  const harnessError = deadlocked ? await terminate(run) : await shutdown(run, o);
  const elapsedMs = performance.now() - start;
  const stoppedAt = st.f[SIMF.STOPPED_AT];
  const schedule = {
    hash: st.hashString(),
    steps: st.f[SIMF.STEPS],
    switches: st.f[SIMF.SWITCHES],
    preemptions: st.f[SIMF.PREEMPTIONS],
    strategy: o.sched === 'pct' ? `pct depth ${o.pctDepth}` : 'random',
    stoppedAtStep: stoppedAt >= 0 ? stoppedAt : null,
    version: SCHEDULE_VERSION,
  };
  const signal = interrupted ? abortSignalName(hooks.signal) : null;
  return buildReport(run, o, {
    found: violations,
    harnessError,
    elapsedMs,
    startupMs: start - launchedAt,
    quiescentChecks,
    signal,
    schedule,
    // The world is stopped for good, also after a stop at a recorded step:
    // the check is part of what replays.
    finalCheck: !deadlocked,
    cutShort: signal !== null || schedule.stoppedAtStep !== null,
    timeline: timeline.points,
    pinnedCpu: claim !== null && pinned ? claim.cpu : null,
  });
}
