import { Transform, type TransformCallback } from 'node:stream';
import { DataError } from './errors.ts';

/**
 * Bounds on decompression, so a small hostile file cannot take the process's memory (a 1 MB
 * gzip of zeros inflates to 1 GB). A file may inflate to `ratio` times its compressed size, but
 * never past `maxBytes`; files too small for the ratio to mean much get `floorBytes`.
 * Real datasets sit far inside them: MNIST's IDX files inflate about 5x, CIFAR's tar.gz 1.1x.
 */
export interface DecompressionLimits {
  ratio: number;
  floorBytes: number;
  maxBytes: number;
}

export const DECOMPRESSION_LIMITS: DecompressionLimits = {
  ratio: 200,
  floorBytes: 64 * 1024 * 1024,
  maxBytes: 4 * 1024 * 1024 * 1024,
};

/** The most bytes a compressed file of `compressedBytes` may inflate to. */
export function decompressedLimit(compressedBytes: number, limits: DecompressionLimits = DECOMPRESSION_LIMITS): number {
  return Math.min(limits.maxBytes, Math.max(limits.floorBytes, compressedBytes * limits.ratio));
}

/** The DataError for a file that inflates past its limit: names the file and both sizes. */
export function decompressionError(file: string, compressedBytes: number, limit: number): DataError {
  return new DataError(
    file,
    `decompresses to more than ${limit} bytes from ${compressedBytes} compressed bytes ` +
      `(limits: ${DECOMPRESSION_LIMITS.ratio}x, at most ${DECOMPRESSION_LIMITS.maxBytes} bytes): refusing a possible decompression bomb`,
  );
}

/** A pass-through stream that fails with `decompressionError` once more than `limit` bytes went through. */
export function byteLimiter(
  file: string,
  compressedBytes: number,
  limit = decompressedLimit(compressedBytes),
): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      seen += chunk.length;
      if (seen > limit) callback(decompressionError(file, compressedBytes, limit));
      else callback(null, chunk);
    },
  });
}
