/**
 * One lock configuration of the uncontended lock benchmark, in a thread of
 * its own (see lockBench in micro.ts): posts the ns per operation of the
 * lock and of the bare pair, round by round.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { lockConfigRounds, type LockConfig, type MicroOptions } from './micro.js';

const d = workerData as { config: LockConfig; options: MicroOptions };
parentPort!.postMessage(lockConfigRounds(d.config, d.options));
