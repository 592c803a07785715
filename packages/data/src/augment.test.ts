import { describe, expect, it } from 'vitest';
import { type AugmentParams, augmentImage, drawAugmentParams, isIdentityAugment } from './augment.ts';
import type { ImageShape } from './dataset.ts';
import { createRng } from './prng.ts';

const SHAPE: ImageShape = [5, 6, 3];

function randomImage(shape: ImageShape, seed: number): Uint8Array {
  const rng = createRng(seed);
  return Uint8Array.from({ length: shape[0] * shape[1] * shape[2] }, () => 1 + rng.int(255));
}

/** The definition, pixel by pixel: crop from the zero-padded image, then mirror the crop. */
function reference(source: Uint8Array, shape: ImageShape, params: AugmentParams): Uint8Array {
  const [h, w, c] = shape;
  const out = new Uint8Array(source.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const cropX = params.mirror ? w - 1 - x : x;
      const sy = y + params.offsetY - params.crop;
      const sx = cropX + params.offsetX - params.crop;
      for (let k = 0; k < c; k++) {
        out[(y * w + x) * c + k] = sy >= 0 && sy < h && sx >= 0 && sx < w ? source[(sy * w + sx) * c + k]! : 0;
      }
    }
  }
  return out;
}

function apply(source: Uint8Array, shape: ImageShape, params: AugmentParams): Uint8Array {
  const out = new Uint8Array(source.length).fill(77);
  augmentImage(source, out, shape, params);
  return out;
}

describe('augmentImage', () => {
  it('is the identity at the centre offset without mirror', () => {
    const image = randomImage(SHAPE, 1);
    expect(apply(image, SHAPE, { crop: 2, offsetY: 2, offsetX: 2, mirror: false })).toEqual(image);
  });

  it('mirror really mirrors: out(y, x) = in(y, w-1-x), channels kept in order', () => {
    const [h, w, c] = SHAPE;
    const image = randomImage(SHAPE, 2);
    const out = apply(image, SHAPE, { crop: 0, offsetY: 0, offsetX: 0, mirror: true });
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let k = 0; k < c; k++) expect(out[(y * w + x) * c + k]).toBe(image[(y * w + (w - 1 - x)) * c + k]);
      }
    }
    expect(apply(out, SHAPE, { crop: 0, offsetY: 0, offsetX: 0, mirror: true })).toEqual(image);
  });

  it('shifts with zero fill: offset 0 moves the image down-right by crop', () => {
    const image = randomImage(SHAPE, 3);
    const out = apply(image, SHAPE, { crop: 1, offsetY: 0, offsetX: 0, mirror: false });
    const [, w, c] = SHAPE;
    expect(Array.from(out.subarray(0, w * c))).toEqual(new Array(w * c).fill(0));
    expect(out[(1 * w + 0) * c]).toBe(0);
    expect(out[(1 * w + 1) * c]).toBe(image[0]);
  });

  it('matches the per-pixel definition for every offset, with and without mirror', () => {
    for (const shape of [SHAPE, [4, 4, 1] as ImageShape]) {
      const image = randomImage(shape, 4);
      for (const crop of [0, 1, 3, 7]) {
        for (let offsetY = 0; offsetY <= 2 * crop; offsetY++) {
          for (let offsetX = 0; offsetX <= 2 * crop; offsetX++) {
            for (const mirror of [false, true]) {
              const params = { crop, offsetY, offsetX, mirror };
              expect(apply(image, shape, params), JSON.stringify(params)).toEqual(reference(image, shape, params));
            }
          }
        }
      }
    }
  });

  it('refuses mismatched sizes', () => {
    expect(() =>
      augmentImage(new Uint8Array(10), new Uint8Array(90), SHAPE, { crop: 0, offsetY: 0, offsetX: 0, mirror: false }),
    ).toThrow(RangeError);
  });
});

describe('drawAugmentParams', () => {
  it('is deterministic in the generator and stays in range', () => {
    const a = createRng(11);
    const b = createRng(11);
    const seenMirror = new Set<boolean>();
    for (let i = 0; i < 200; i++) {
      const params = drawAugmentParams(a, { crop: 4, mirror: true });
      expect(drawAugmentParams(b, { crop: 4, mirror: true })).toEqual(params);
      expect(params.offsetY).toBeGreaterThanOrEqual(0);
      expect(params.offsetY).toBeLessThanOrEqual(8);
      expect(params.offsetX).toBeLessThanOrEqual(8);
      seenMirror.add(params.mirror);
    }
    expect(seenMirror.size).toBe(2);
  });

  it('draws nothing for disabled parts', () => {
    expect(drawAugmentParams(createRng(1), {})).toEqual({ crop: 0, offsetY: 0, offsetX: 0, mirror: false });
    expect(isIdentityAugment({ crop: 0, mirror: false })).toBe(true);
    expect(isIdentityAugment(undefined)).toBe(true);
    expect(isIdentityAugment({ mirror: true })).toBe(false);
  });
});
