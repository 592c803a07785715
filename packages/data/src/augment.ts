/**
 * Training-time augmentation as in the paper's setup (after Krizhevsky et al.): a random crop
 * taken from the image zero-padded by `crop` pixels on every side (so the output keeps the
 * input's size), then a random horizontal mirror of that crop.
 */
import type { ImageShape } from './dataset.ts';
import type { Rng } from './prng.ts';

export interface AugmentOptions {
  /** Pad by this many pixels, then crop back to the original size at a random offset. */
  crop?: number;
  /** Mirror left-right with probability 1/2. */
  mirror?: boolean;
}

/** One image's draw. offsetY/offsetX are the crop's top-left corner in the padded image, 0..2*crop. */
export interface AugmentParams {
  crop: number;
  offsetY: number;
  offsetX: number;
  mirror: boolean;
}

export function isIdentityAugment(augment: AugmentOptions | undefined): boolean {
  return augment === undefined || ((augment.crop ?? 0) === 0 && augment.mirror !== true);
}

export function checkAugmentOptions(augment: AugmentOptions): void {
  const crop = augment.crop ?? 0;
  if (!Number.isSafeInteger(crop) || crop < 0)
    throw new RangeError(`augment.crop must be an integer >= 0, got ${augment.crop}`);
}

/** Draws in a fixed order (y, x, mirror), skipping draws for disabled parts, so the stream is specified. */
export function drawAugmentParams(rng: Rng, augment: AugmentOptions): AugmentParams {
  const crop = augment.crop ?? 0;
  const offsetY = crop > 0 ? rng.int(2 * crop + 1) : 0;
  const offsetX = crop > 0 ? rng.int(2 * crop + 1) : 0;
  const mirror = augment.mirror === true ? rng.bool() : false;
  return { crop, offsetY, offsetX, mirror };
}

/**
 * Writes the augmented `source` image into `target` (same size, must not overlap). Rows are
 * copied whole with `set` when not mirrored; only a mirror needs a per-pixel loop.
 */
export function augmentImage(source: Uint8Array, target: Uint8Array, shape: ImageShape, params: AugmentParams): void {
  const [height, width, channels] = shape;
  const rowBytes = width * channels;
  if (source.length !== height * rowBytes || target.length !== height * rowBytes) {
    throw new RangeError(
      `augmentImage: expected ${height * rowBytes} bytes for shape [${shape.join(', ')}], got source ${source.length}, target ${target.length}`,
    );
  }
  const shiftY = params.offsetY - params.crop;
  const shiftX = params.offsetX - params.crop;
  // Output x reads source column x + shiftX (before mirroring); these bound the valid span.
  const validStart = Math.min(width, Math.max(0, -shiftX));
  const validEnd = Math.max(validStart, Math.min(width, width - shiftX));
  for (let y = 0; y < height; y++) {
    const targetRow = y * rowBytes;
    const sourceY = y + shiftY;
    if (sourceY < 0 || sourceY >= height) {
      target.fill(0, targetRow, targetRow + rowBytes);
      continue;
    }
    const sourceRow = sourceY * rowBytes;
    if (!params.mirror) {
      target.fill(0, targetRow, targetRow + validStart * channels);
      target.set(
        source.subarray(sourceRow + (validStart + shiftX) * channels, sourceRow + (validEnd + shiftX) * channels),
        targetRow + validStart * channels,
      );
      target.fill(0, targetRow + validEnd * channels, targetRow + rowBytes);
      continue;
    }
    for (let x = 0; x < width; x++) {
      const sourceX = width - 1 - x + shiftX;
      const at = targetRow + x * channels;
      if (sourceX < 0 || sourceX >= width) {
        target.fill(0, at, at + channels);
        continue;
      }
      const from = sourceRow + sourceX * channels;
      for (let c = 0; c < channels; c++) target[at + c] = source[from + c]!;
    }
  }
}
