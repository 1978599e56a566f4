import type { Sched } from './sched.js';

/** Actor kinds, stored in shared memory for reports. */
export const ACTOR_KIND = { VCPU: 1, HOSTMM: 2, MIGRATOR: 3, CHECKER: 4 } as const;

/**
 * One thread of control in the model: a vCPU, the host-MM actor, the
 * migration thread, or the orchestrator running checks. Protocol functions
 * take the actor doing the work; it carries the scheduling hook and a few
 * out-parameters so that the hot path allocates nothing.
 */
export class Actor {
  /** Out-parameter of gfnToPfnProt(): whether the host mapping is writable. */
  writable = false;
  /** Next unique write number of a vCPU. */
  writeSeq = 0;
  /** SRCU read-side nesting depth (srcu_read_lock sections nest). */
  srcuDepth = 0;
  /** Number of this actor's last RCU read section (src/sync/rcu.ts). */
  rcuSection = 0;
  /** A stage-2 entry (word index) a fault of this vCPU found LOCKED by another walker, or -1 (the fault then waits for it). */
  lockedSeen = -1;
  /** Out-parameter of kvmHandleGuestAbort(): what user_mem_abort() returned (0, FAULT_RETRY or -errno). */
  faultResult = 0;
  constructor(
    readonly id: number,
    readonly sched: Sched,
  ) {}
}
