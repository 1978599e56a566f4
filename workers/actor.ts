/**
 * Piscina task entry point: one long-running task per actor (vCPU, host-MM,
 * migrator), on the shared region it is handed. Returns when the run ends.
 */
import { availableParallelism } from 'node:os';
import { attachVm } from '../src/vm.js';
import { Actor } from '../src/sync/actor.js';
import { ChaosSched, FreeSched, spinsFor, type Sched } from '../src/sync/sched.js';
import { ACTOR, ACTOR_WORDS, CTRL } from '../src/shm/layout.js';
import { SimSched, SimState, type SimConfig } from '../src/sim/sched.js';
import { threadId } from '../src/sim/pin.js';
import type { ModelConfig } from '../src/config.js';
import { type ActorParams, actorSeed } from '../src/actors/params.js';
import { runVcpu } from '../src/actors/vcpu.js';
import { runHostMm } from '../src/actors/hostmm.js';
import { runMigrator } from '../src/actors/migrator.js';
import { DEFAULT_HOLD_SAMPLE, LockStats, type LockStatsSnapshot } from '../src/sync/lockstat.js';

export type ActorRole = 'vcpu' | 'hostmm' | 'migrator';

export interface ActorTask {
  role: ActorRole;
  id: number;
  cfg: ModelConfig;
  params: ActorParams;
  sab: SharedArrayBuffer;
  /** Testing aid: throw after this many loop iterations (0 = never). */
  crashAfterTicks?: number;
  /** Sim mode: the scheduler's shared state. */
  /** `tids`: where each actor writes its thread id (Int32 by actor id), for --sim-cpu. */
  sim?: { sab: SharedArrayBuffer; cfg: SimConfig; tids?: SharedArrayBuffer };
  /**
   * Threads mode: the start gate, Int32 [booted, open]. The actor counts
   * itself booted and waits for the gate, so that the run clock and the
   * watchdog start when every actor is running.
   */
  gate?: SharedArrayBuffer;
}

export interface ActorResult {
  id: number;
  role: ActorRole;
  lockStats: LockStatsSnapshot | null;
}

export default function actorTask(task: ActorTask): ActorResult {
  // lock_stat of this actor's mmu_lock acquisitions; hold-time sampling seeded from the run seed.
  const stats = task.cfg.lockStats ? new LockStats(task.cfg.lockHoldSample ?? DEFAULT_HOLD_SAMPLE, actorSeed(task.params.seed, task.id + 2000)) : null;
  const kvm = attachVm(task.cfg, task.sab, stats);
  const m = kvm.m;
  const waitWord = kvm.actorWord(task.id, ACTOR.WAITING_ON);
  const simSched = task.sim
    ? new SimSched(m, new SimState(task.sim.sab, task.sim.cfg), task.id, waitWord, kvm.actorWord(0, ACTOR.PROGRESS), ACTOR_WORDS)
    : null;
  const spins = spinsFor(task.cfg.vcpus, availableParallelism());
  const sched: Sched =
    simSched ??
    (task.params.chaos > 0
      ? new ChaosSched(m, task.params.chaos, actorSeed(task.params.seed, task.id + 1000), waitWord, spins)
      : new FreeSched(m, waitWord, spins));
  const actor = new Actor(task.id, sched);
  if (task.gate) {
    const g = new Int32Array(task.gate);
    Atomics.add(g, 0, 1);
    Atomics.notify(g, 0);
    while (Atomics.load(g, 1) === 0) Atomics.wait(g, 1, 0);
  }
  if (simSched) {
    // --sim-cpu: the orchestrator pins this thread by its id once every actor is ready (src/sim/pin.ts).
    if (task.sim!.tids) Atomics.store(new Int32Array(task.sim!.tids), task.id, Number(threadId() ?? 0));
    simSched.start();
  }
  try {
    if (task.crashAfterTicks) {
      const progress = kvm.actorWord(task.id, ACTOR.PROGRESS);
      const orig = sched.point.bind(sched);
      sched.point = (site: number) => {
        if (Atomics.load(m, progress) >= task.crashAfterTicks!) {
          throw new Error(`injected crash in ${task.role} ${task.id} (--crash-actor)`);
        }
        orig(site);
      };
    }
    switch (task.role) {
      case 'vcpu':
        runVcpu(kvm, actor, task.params);
        break;
      case 'hostmm':
        runHostMm(kvm, actor, task.params);
        break;
      case 'migrator':
        runMigrator(kvm, actor, task.params);
        break;
    }
  } finally {
    Atomics.sub(m, CTRL.ACTORS_RUNNING, 1);
    Atomics.notify(m, CTRL.PARKED);
    Atomics.notify(m, CTRL.ACTORS_RUNNING);
    if (simSched) simSched.exit();
  }
  return { id: task.id, role: task.role, lockStats: stats ? stats.snapshot() : null };
}
