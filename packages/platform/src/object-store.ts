/**
 * The object-store port. Keys are '/'-separated paths (e.g. `splits/<id>/manifest.json`).
 * Every adapter makes `put` atomic: a reader sees the whole object or none of it.
 */
export interface ObjectStat {
  size: number;
  metadata: Record<string, string>;
}

export interface ObjectStore {
  /** Writes the whole object atomically, replacing any previous version. */
  put(key: string, data: Uint8Array, options?: { metadata?: Record<string, string> }): Promise<void>;
  /** Reads the whole object; throws ObjectNotFoundError when absent. */
  get(key: string): Promise<Buffer>;
  /** undefined when absent. */
  stat(key: string): Promise<ObjectStat | undefined>;
  /** Keys under a prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  delete(key: string): Promise<void>;
  /** A human-readable location for messages, e.g. the folder or `s3://bucket`. */
  describe(key: string): string;
}

export class ObjectNotFoundError extends Error {
  constructor(
    readonly key: string,
    where: string,
  ) {
    super(`object not found: ${key} (in ${where})`);
    this.name = 'ObjectNotFoundError';
  }
}

export function assertSafeKey(key: string): void {
  if (key === '' || key.startsWith('/') || key.split('/').some((part) => part === '..' || part === '')) {
    throw new Error(`invalid object key '${key}': keys are relative '/'-separated paths without '..' or empty parts`);
  }
}
