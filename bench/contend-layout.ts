/** Shared words of the contended-lock benchmark (bench/contend.ts and its worker). */
import type { LockKind } from '../src/config.js';

export const CW = {
  /** Round generation: bumped by the main thread to start a round. */
  GEN: 0,
  /** Set to the round's generation to let the workers go / make them stop. */
  GO: 1,
  STOP: 2,
  READY: 3,
  DONE: 4,
  /** 1: this round keeps lock statistics. */
  STATS: 5,
  QUIT: 6,
  /** The lock block (LOCK_WORDS). */
  LOCK: 16,
  /** What the critical section writes. */
  DATA: 32,
  /** Per-worker words: [0] iterations, [1] acquisitions, [2] contentions, [3] hold avg ns; [8..71] its own work area. */
  PER_WORKER: 128,
  WORKER_WORDS: 80,
} as const;

export function contendWords(workers: number): number {
  return CW.PER_WORKER + workers * CW.WORKER_WORDS + workers;
}

/** The rwlock's read holders' region (one word per worker), after the per-worker words. */
export function contendReaders(workers: number): number {
  return CW.PER_WORKER + workers * CW.WORKER_WORDS;
}

export interface ContendWorkerData {
  sab: SharedArrayBuffer;
  id: number;
  kind: LockKind;
  /** Workers (the rwlock's readers region has a word for each). */
  workers: number;
  holdSample: number;
  /** Steps of plain work inside the critical section, and outside it. */
  holdWork: number;
  outsideWork: number;
}
