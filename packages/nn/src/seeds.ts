/**
 * Seeds for the nets' random draws. A net's seed is split per layer and per step by hashing, not
 * by adding offsets: with `seed + index`, net 1's conv2 would start from the same stream as net
 * 2's conv1, and repeats of a cell would share weights across layers.
 */

/** A 32-bit seed derived from `seed` and a tag such as a layer name or `drop6/step42`. */
export function deriveSeed(seed: number, tag: string): number {
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be a safe integer, got ${seed}`);
  // FNV-1a over the decimal seed and the tag, then a murmur3 finaliser so that tags differing
  // in one character give unrelated seeds.
  let hash = 0x811c9dc5;
  const text = `${seed}\u0000${tag}`;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}
