/** Shared set-up for single-threaded model tests. */
import type { LockStatsSink } from '../src/sync/spinlock.js';
import { DEFAULT_MODEL, type ModelConfig } from '../src/config.js';
import { createVm } from '../src/vm.js';
import { Actor } from '../src/sync/actor.js';
import { FreeSched } from '../src/sync/sched.js';
import type { Kvm } from '../src/kvm/kvm.js';

export interface World {
  kvm: Kvm;
  vcpus: Actor[];
  host: Actor;
  migrator: Actor;
  checker: Actor;
}

export function makeWorld(over: Partial<ModelConfig> = {}, lockStats: LockStatsSink | null = null): World {
  const cfg: ModelConfig = { ...DEFAULT_MODEL, guestMem: 8 * 1024 * 1024, vcpus: 2, ...over };
  const kvm = createVm(cfg, lockStats);
  const sched = new FreeSched(kvm.m);
  const L = kvm.layout;
  return {
    kvm,
    vcpus: Array.from({ length: L.vcpus }, (_, i) => new Actor(i, sched)),
    host: new Actor(L.hostActor, sched),
    migrator: new Actor(L.migrator, sched),
    checker: new Actor(L.checker, sched),
  };
}

/** A unique value as a vCPU writes it: write number << 7 | vcpu id. */
export function wval(vcpu: Actor): number {
  vcpu.writeSeq++;
  return ((vcpu.writeSeq << 7) | vcpu.id) | 0;
}
