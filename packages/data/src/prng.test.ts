import { describe, expect, it } from 'vitest';
import { createRng, deriveRng, deriveSeed, permutation, shuffleInPlace, shuffled } from './prng.ts';

describe('Rng', () => {
  it('is pinned: a change of generator, seeding or warm-up changes these numbers', () => {
    const rng = createRng(42);
    expect([1, 2, 3, 4, 5].map(() => rng.nextUint32())).toEqual([
      1260144694, 1416578544, 2676463084, 2327532132, 471399469,
    ]);
    expect(Array.from(permutation(10, createRng(1)))).toEqual([7, 9, 3, 2, 4, 8, 0, 1, 5, 6]);
  });

  it('repeats for the same seed and differs across seeds', () => {
    const draw = (seed: number): number[] => {
      const rng = createRng(seed);
      return Array.from({ length: 20 }, () => rng.nextUint32());
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it('accepts seeds beyond 32 bits without truncating them to the same stream', () => {
    const first = (seed: number): number => createRng(seed).nextUint32();
    expect(first(2 ** 32 + 5)).not.toBe(first(5));
    expect(first(-1)).not.toBe(first(2 ** 32 - 1));
    expect(() => createRng(1.5)).toThrow(/safe integer/);
  });

  it('draws bounded integers in range and roughly uniformly', () => {
    const rng = createRng(3);
    const counts = new Array<number>(6).fill(0);
    let outside = 0;
    for (let i = 0; i < 60_000; i++) {
      const value = rng.int(6);
      if (value >= 0 && value < 6) counts[value]!++;
      else outside++;
    }
    expect(outside).toBe(0);
    for (const count of counts) expect(Math.abs(count - 10_000)).toBeLessThan(500);
    expect(createRng(1).int(1)).toBe(0);
    expect(() => rng.int(0)).toThrow(RangeError);
    const f = rng.float();
    expect(f >= 0 && f < 1).toBe(true);
  });
});

describe('shuffles', () => {
  it('permutation holds every index once and is deterministic', () => {
    const order = permutation(1000, createRng(9));
    expect(Array.from(order).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(permutation(1000, createRng(9))).toEqual(order);
    expect(permutation(0, createRng(9)).length).toBe(0);
  });

  it('shuffled leaves its input alone; shuffleInPlace works on typed arrays', () => {
    const input = ['a', 'b', 'c', 'd', 'e'];
    const out = shuffled(input, createRng(2));
    expect(input).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(out.slice().sort()).toEqual(input);
    const typed = shuffleInPlace(Int32Array.from([1, 2, 3, 4, 5]), createRng(2));
    expect(Array.from(typed).sort()).toEqual([1, 2, 3, 4, 5]);
  });
});

describe('deriveSeed', () => {
  it('is pinned and stable', () => {
    expect(deriveSeed(0)).toBe(2426085762);
    expect(deriveSeed(1, 'split')).toBe(558354439);
    expect(deriveSeed(7, 'epoch-order', 3)).toBe(4155430813);
  });

  it('separates parts that concatenate alike, and numbers from strings', () => {
    expect(deriveSeed(1, 'ab', 'c')).not.toBe(deriveSeed(1, 'a', 'bc'));
    expect(deriveSeed(1, 1)).not.toBe(deriveSeed(1, '1'));
    expect(deriveSeed(1, 'epoch', 1)).not.toBe(deriveSeed(1, 'epoch', 2));
    expect(deriveSeed(1, 'x')).not.toBe(deriveSeed(2, 'x'));
    const seed = deriveSeed(123, 'ünïcode', -4.5);
    expect(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32).toBe(true);
    expect(() => deriveSeed(1, Number.NaN)).toThrow(RangeError);
  });

  it('gives independent-looking streams for neighbouring parts', () => {
    const a = deriveRng(5, 'epoch', 1);
    const b = deriveRng(5, 'epoch', 2);
    const same = Array.from({ length: 100 }, () => a.int(2) === b.int(2)).filter(Boolean).length;
    expect(same).toBeGreaterThan(30);
    expect(same).toBeLessThan(70);
  });
});
