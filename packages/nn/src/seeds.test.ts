import { describe, expect, test } from 'vitest';
import { deriveSeed } from './seeds.ts';

describe('deriveSeed', () => {
  test('is stable, and differs by seed and by tag', () => {
    expect(deriveSeed(1, 'conv1')).toBe(deriveSeed(1, 'conv1'));
    const seeds = new Set([
      deriveSeed(1, 'conv1'),
      deriveSeed(1, 'conv2'),
      deriveSeed(2, 'conv1'),
      deriveSeed(12, 'conv1'),
    ]);
    expect(seeds.size).toBe(4);
    expect(() => deriveSeed(1.5, 'conv1')).toThrow(/safe integer/);
  });
});
