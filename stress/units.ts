/** Parsing sizes (`1G`, `512M`) and durations (`20s`, `500ms`) for the CLI. */
import { ConfigError } from '../src/config.js';

const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

export function parseSize(flag: string, text: string): number {
  const mt = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!mt) throw new ConfigError(flag, `${flag} takes a size such as 512M, 1G or 16G, got '${text}'`);
  const n = Number(mt[1]) * SIZE_UNITS[mt[2].toUpperCase()];
  if (!Number.isSafeInteger(n)) throw new ConfigError(flag, `${flag} '${text}' is too large`);
  return n;
}

const TIME_UNITS: Record<string, number> = { ms: 1, s: 1000, '': 1000, m: 60_000, h: 3_600_000 };

/** Longest duration any flag takes: a week (timers and deadlines stay far from overflow). */
export const MAX_DURATION_MS = 7 * 24 * 3_600_000;

/**
 * A duration in whole milliseconds, from `minMs` to `maxMs`. Decimal
 * fractions are accepted (`1.5s`), hex and exponent forms are not; a value
 * below `minMs` before rounding (`0.4ms` for a 1 ms floor) is an error.
 */
export function parseDuration(flag: string, text: string, minMs = 1, maxMs = MAX_DURATION_MS): number {
  const range = `from ${formatDuration(minMs)} to ${formatDuration(maxMs)}`;
  const mt = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!mt) throw new ConfigError(flag, `${flag} takes a duration ${range} such as 500ms, 20s or 2m, got '${text}'`);
  const ms = Number(mt[1]) * TIME_UNITS[mt[2] ?? ''];
  if (!(ms >= minMs) || ms > maxMs) throw new ConfigError(flag, `${flag} must be ${range}, got '${text}'`);
  return Math.round(ms);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms >= 3_600_000) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** A whole number in decimal digits (no sign other than '-', no hex, no exponent, no fraction). */
export function parseIntFlag(flag: string, text: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(text.trim())) throw new ConfigError(flag, `${flag} takes a whole number from ${min} to ${max}, got '${text}'`);
  const n = Number(text);
  if (n < min || n > max) throw new ConfigError(flag, `${flag} must be a whole number from ${min} to ${max}, got ${text.trim()}`);
  return n;
}

/** A decimal number (`0.25`, `50`): no hex, no exponent, no Infinity. */
export function parseFloatFlag(flag: string, text: string, min: number, max: number): number {
  const t = text.trim();
  const n = Number(t);
  if (!/^-?\d+(\.\d+)?$/.test(t) || !Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(flag, `${flag} takes a number from ${min} to ${max}, got '${text}'`);
  }
  return n;
}
