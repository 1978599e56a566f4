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

export function parseDuration(flag: string, text: string): number {
  const mt = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!mt) throw new ConfigError(flag, `${flag} takes a duration such as 500ms, 20s or 2m, got '${text}'`);
  const ms = Number(mt[1]) * TIME_UNITS[mt[2] ?? ''];
  if (!(ms > 0)) throw new ConfigError(flag, `${flag} must be positive, got '${text}'`);
  return Math.round(ms);
}

export function formatDuration(ms: number): string {
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export function parseIntFlag(flag: string, text: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(text.trim())) throw new ConfigError(flag, `${flag} takes a whole number from ${min} to ${max}, got '${text}'`);
  const n = Number(text);
  if (n < min || n > max) throw new ConfigError(flag, `${flag} must be from ${min} to ${max}, got ${n}`);
  return n;
}

export function parseFloatFlag(flag: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(flag, `${flag} takes a number from ${min} to ${max}, got '${text}'`);
  }
  return n;
}
