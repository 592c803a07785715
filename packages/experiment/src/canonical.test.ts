import { describe, expect, it } from 'vitest';
import { canonicalJson, contentId, sha256Hex } from './canonical.ts';

describe('canonicalJson', () => {
  it('sorts keys at every depth and drops undefined fields', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: true, y: null }], c: undefined } })).toBe(
      '{"a":{"d":[1,{"y":null,"z":true}]},"b":1}',
    );
  });

  it('gives the same id whatever the key order', () => {
    expect(contentId({ x: 1, y: [2, 3] })).toBe(contentId({ y: [2, 3], x: 1 }));
    expect(contentId({ x: 1 })).not.toBe(contentId({ x: 2 }));
  });

  it('refuses values JSON cannot carry', () => {
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(/\$\.a is NaN/);
    expect(() => canonicalJson({ a: new Date(0) })).toThrow(/not a plain object/);
  });

  it('hashes with sha256', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(contentId('abc')).toHaveLength(20);
  });
});
