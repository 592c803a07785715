import { createHash } from 'node:crypto';

/**
 * Canonical JSON: object keys sorted by code unit, no whitespace, `undefined` fields dropped.
 * Two values that mean the same thing serialise to the same bytes, which is what makes
 * content ids stable across key order, YAML vs JSON input, and optional fields left out.
 */
export function canonicalJson(value: unknown): string {
  return write(value, '$');
}

function write(value: unknown, where: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    case 'number':
      // NaN and Infinity have no JSON form; letting them through as null would make
      // two different inputs hash the same.
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${where} is ${value}`);
      // -0 and 0 train the same net.
      return JSON.stringify(value === 0 ? 0 : value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value.map((item, i) => (item === undefined ? 'null' : write(item, `${where}[${i}]`))).join(',')}]`;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) {
        throw new TypeError(`canonicalJson: ${where} is not a plain object`);
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record)
        .filter((key) => record[key] !== undefined)
        .sort();
      return `{${keys.map((key) => `${JSON.stringify(key)}:${write(record[key], `${where}.${key}`)}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonicalJson: ${where} has type ${typeof value}`);
  }
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Length of the hex ids we print: 80 bits, far beyond any sweep's collision risk. */
export const ID_LENGTH = 20;

export function contentId(value: unknown, options: { length?: number } = {}): string {
  return sha256Hex(canonicalJson(value)).slice(0, options.length ?? ID_LENGTH);
}
