/**
 * The one source of randomness for splits, epoch orders and augmentation.
 *
 * Everything here is specified down to the bit so that a seed means the same thing on every
 * machine and in every release: the generator is xoroshiro128+ (pure-rand's implementation,
 * seeded with a 32-bit integer, the first WARM_UP outputs discarded), bounded integers use
 * rejection sampling on unsigned 32-bit outputs, and shuffles are Fisher-Yates from the last
 * element down. Changing any of these changes every split: the pinned expectations in
 * prng.test.ts and split.test.ts exist to catch that.
 */
import { xoroshiro128plus } from 'pure-rand';
import type { RandomGenerator } from 'pure-rand';

const TWO_POW_32 = 0x1_0000_0000;
// Seeds that differ in a few low bits start from nearly identical xoroshiro states; a short
// warm-up lets the state mix before any output is used.
const WARM_UP = 16;

export class Rng {
  private readonly generator: RandomGenerator;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
    // Seeds outside uint32 would be truncated silently by the generator; hash them instead.
    const seed32 = seed >= 0 && seed < TWO_POW_32 ? seed : deriveSeed(seed);
    this.generator = xoroshiro128plus(seed32 | 0);
    for (let i = 0; i < WARM_UP; i++) this.generator.unsafeNext();
  }

  /** An unsigned 32-bit integer. */
  nextUint32(): number {
    return this.generator.unsafeNext() >>> 0;
  }

  /** An integer uniform in [0, n), n in [1, 2^32]. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32)
      throw new RangeError(`int(n) needs an integer n in [1, 2^32], got ${n}`);
    // Rejecting the top partial bucket keeps every residue equally likely (plain modulo would not).
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    let value = this.nextUint32();
    while (value >= limit) value = this.nextUint32();
    return value % n;
  }

  /** A float uniform in [0, 1) with 32 bits of resolution. */
  float(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  /** true with probability 1/2. */
  bool(): boolean {
    return (this.nextUint32() & 1) === 1;
  }
}

export function createRng(seed: number): Rng {
  return new Rng(seed);
}

type Shufflable = { length: number; [index: number]: unknown };

/** Fisher-Yates in place; returns the same array for chaining. */
export function shuffleInPlace<T extends Shufflable>(items: T, rng: Rng): T {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const held = items[i];
    items[i] = items[j];
    items[j] = held;
  }
  return items;
}

/** A shuffled copy; the input is left alone. */
export function shuffled<T>(items: readonly T[], rng: Rng): T[] {
  return shuffleInPlace(items.slice(), rng);
}

/** A uniformly random permutation of 0..n-1. */
export function permutation(n: number, rng: Rng): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  return shuffleInPlace(order, rng);
}

const encoder = new TextEncoder();

/**
 * A 32-bit seed for an independent stream, e.g. `deriveSeed(seed, 'epoch-order', epoch)`.
 * FNV-1a over a length-prefixed, type-tagged encoding (so ('ab', 'c') and ('a', 'bc'), or 1
 * and '1', never collide by construction), then murmur3's finaliser so that neighbouring
 * inputs land far apart.
 */
export function deriveSeed(seed: number, ...parts: (string | number)[]): number {
  let hash = 0x811c9dc5;
  const feed = (part: string | number): void => {
    if (typeof part === 'number' && !Number.isFinite(part))
      throw new RangeError(`deriveSeed: parts must be finite, got ${part}`);
    const body = encoder.encode(String(part));
    const bytes = [...encoder.encode(`${typeof part === 'number' ? 'n' : 's'}${body.length}:`), ...body];
    for (const byte of bytes) {
      hash ^= byte;
      hash = Math.imul(hash, 0x01000193);
    }
  };
  feed(seed);
  for (const part of parts) feed(part);
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

/** Shorthand for `createRng(deriveSeed(seed, ...parts))`. */
export function deriveRng(seed: number, ...parts: (string | number)[]): Rng {
  return new Rng(deriveSeed(seed, ...parts));
}
