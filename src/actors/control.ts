/**
 * Stop-the-world and pausing, as actors see them. The orchestrator sets STOP
 * and waits until every running actor is parked; the migrator sets
 * PAUSE_VCPUS for stop-and-copy and waits until every vCPU is paused. Actors
 * look at both only at their safe points (the top of their loops: no lock
 * held, no access or fault in progress). A paused vCPU also counts as parked
 * when a stop comes, so the two never deadlock.
 */
import type { Kvm } from '../kvm/kvm.js';
import type { Actor } from '../sync/actor.js';
import { ACTOR, CTRL } from '../shm/layout.js';
import { SITE } from '../sync/sites.js';

/** Wake everybody waiting on a control change. */
export function bumpControl(m: Int32Array): void {
  Atomics.add(m, CTRL.CONTROL_GEN, 1);
  Atomics.notify(m, CTRL.CONTROL_GEN);
}

/** True if the actor should stop now (the run ended). */
export function runEnded(kvm: Kvm): boolean {
  return Atomics.load(kvm.m, CTRL.END) !== 0;
}

/**
 * The safe point. Returns false when the run has ended. `isVcpu` makes the
 * actor honour PAUSE_VCPUS as well as STOP.
 */
export function safePoint(kvm: Kvm, actor: Actor, isVcpu: boolean): boolean {
  const m = kvm.m;
  if (Atomics.load(m, CTRL.STOP) === 0 && (!isVcpu || Atomics.load(m, CTRL.PAUSE_VCPUS) === 0)) {
    return Atomics.load(m, CTRL.END) === 0;
  }
  let parked = false;
  let paused = false;
  const parkedWord = kvm.actorWord(actor.id, ACTOR.PARKED);
  for (;;) {
    const gen = Atomics.load(m, CTRL.CONTROL_GEN);
    const end = Atomics.load(m, CTRL.END) !== 0;
    const stop = !end && Atomics.load(m, CTRL.STOP) !== 0;
    const pause = !end && isVcpu && Atomics.load(m, CTRL.PAUSE_VCPUS) !== 0;
    if (stop !== parked) {
      parked = stop;
      Atomics.store(m, parkedWord, stop ? 1 : 0);
      Atomics.add(m, CTRL.PARKED, stop ? 1 : -1);
      Atomics.notify(m, CTRL.PARKED);
    }
    if (pause !== paused) {
      paused = pause;
      Atomics.add(m, CTRL.VCPUS_PAUSED, pause ? 1 : -1);
      Atomics.notify(m, CTRL.VCPUS_PAUSED);
    }
    if (!stop && !pause) return !end;
    actor.sched.point(SITE.park);
    actor.sched.waitWhile(CTRL.CONTROL_GEN, gen, SITE.park);
  }
}

/** Count completed work for the progress watchdog. */
export function tick(kvm: Kvm, actor: Actor): void {
  Atomics.add(kvm.m, kvm.actorWord(actor.id, ACTOR.PROGRESS), 1);
}
