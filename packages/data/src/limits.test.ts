// Decompression bombs: a small file that inflates past its bound is refused, naming the file,
// and the process never holds the whole inflation.
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readMaybeGzip, readTarEntries } from './archive.ts';
import { DataError } from './errors.ts';
import { DECOMPRESSION_LIMITS, decompressedLimit } from './limits.ts';
import { readIdx } from './readers/idx.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transferlab-limits-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `bytes` zero bytes, gzipped into `file` without ever holding them all. */
async function gzipZeros(file: string, bytes: number, header = Buffer.alloc(0)): Promise<number> {
  const chunk = Buffer.alloc(1024 * 1024);
  async function* zeros(): AsyncGenerator<Buffer> {
    yield header;
    for (let left = bytes; left > 0; left -= chunk.length) yield chunk.subarray(0, Math.min(chunk.length, left));
  }
  await pipeline(Readable.from(zeros()), createGzip({ level: 9 }), createWriteStream(file));
  return (await stat(file)).size;
}

async function refusal(promise: Promise<unknown>): Promise<DataError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DataError);
  return error as DataError;
}

describe('decompression limits', () => {
  it('bounds the output by a ratio of the input, a floor and an absolute cap', () => {
    expect(decompressedLimit(1000)).toBe(DECOMPRESSION_LIMITS.floorBytes);
    expect(decompressedLimit(1024 * 1024)).toBe(200 * 1024 * 1024);
    expect(decompressedLimit(1e12)).toBe(DECOMPRESSION_LIMITS.maxBytes);
  });

  it('refuses a gzipped IDX file that inflates 1000x (issue 9: a 1 MB one took the process to 2.3 GB)', async () => {
    const file = join(dir, 'bomb-idx.gz');
    // A valid IDX header for 1e9 bytes of 1x1 images, then the zeros: it looks like a real file.
    const header = Buffer.from([0, 0, 8, 3, 0x20, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    const compressed = await gzipZeros(file, 512 * 1024 * 1024, header);
    expect(compressed).toBeLessThan(1024 * 1024);
    const before = process.memoryUsage().rss;
    const error = await refusal(readIdx({ kind: 'idx', trainImages: file, trainLabels: file }));
    expect(error.file).toBe(file);
    expect(error.message).toMatch(/decompresses to more than \d+ bytes.*decompression bomb/);
    // zlib stops at the limit: the process grew by about twice the limit (chunks, then their
    // concatenation), never by the whole 512 MiB.
    expect(process.memoryUsage().rss - before).toBeLessThan(2.5 * decompressedLimit(compressed));
  }, 60_000);

  it('honours explicit limits, and reads a file inside them', async () => {
    const file = join(dir, 'small.gz');
    await writeFile(file, gzipSync(Buffer.alloc(4096, 7)));
    const limits = { ratio: 2, floorBytes: 1024, maxBytes: 1 << 20 };
    await refusal(readMaybeGzip(file, limits));
    expect((await readMaybeGzip(file, { ...limits, floorBytes: 8192 })).length).toBe(4096);
  });

  it('streams a tar.gz through a byte counter: one huge entry is refused, not read whole', async () => {
    // A tar header for one 256 MiB file, then zeros: a valid archive of a single large entry.
    const size = 256 * 1024 * 1024;
    const header = Buffer.alloc(512);
    header.write('big.bin', 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(size.toString(8).padStart(11, '0') + '\0', 124);
    header.write('00000000000\0', 136);
    header.write('        ', 148);
    header.write('0', 156);
    header.write('ustar\x0000', 257);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    const file = join(dir, 'bomb.tar.gz');
    await gzipZeros(file, size + 1024, header);
    const seen: string[] = [];
    const error = await refusal(
      readTarEntries(file, async (entry) => {
        seen.push(entry.name);
        for await (const _ of entry.stream()) void _;
      }),
    );
    expect(error.file).toBe(file);
    expect(error.message).toMatch(/decompression bomb/);
    expect(seen).toEqual(['big.bin']);
  }, 60_000);
});
