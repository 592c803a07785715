import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip, gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import * as tar from 'tar-stream';
import { DataError, describeError, isDataError } from './errors.ts';
import { type DecompressionLimits, byteLimiter, decompressedLimit, decompressionError } from './limits.ts';

const gunzipAsync = promisify(gunzip);

export interface TarEntry {
  /** Relative path with '/' separators, without './' or a trailing '/'. Never absolute, never with '..'. */
  name: string;
  type: 'file' | 'directory' | 'other';
  size: number;
  /** The entry's bytes. Call at most once; an entry the handler leaves unread is skipped. */
  read(): Promise<Buffer>;
  /** The entry's bytes as a stream, for large entries. Same single-use rule as `read`. */
  stream(): AsyncIterable<Buffer>;
}

export type TarEntryHandler = (entry: TarEntry) => void | Promise<void>;

export function isGzipMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

async function fileStartsWithGzipMagic(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await handle.read(head, 0, 2, 0);
    return isGzipMagic(head.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
}

/** Reads a whole file, gunzipping it when it starts with the gzip magic (extensions lie). */
export async function readMaybeGzip(path: string, limits?: DecompressionLimits): Promise<Buffer> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (error) {
    throw new DataError(path, `cannot read file: ${describeError(error)}`, { cause: error });
  }
  if (!isGzipMagic(raw)) return raw;
  // zlib stops at maxOutputLength, so a bomb costs at most the limit, never the whole inflation.
  const limit = decompressedLimit(raw.length, limits);
  try {
    return await gunzipAsync(raw, { maxOutputLength: limit });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw decompressionError(path, raw.length, limit);
    }
    throw new DataError(path, `corrupt or truncated gzip data: ${describeError(error)}`, { cause: error });
  }
}

/**
 * Normalises an archive entry name, refusing anything that could resolve outside the folder it
 * is extracted into: absolute paths, drive letters, and '..' segments. Backslashes count as
 * separators so that an archive made on Windows cannot smuggle '..\\' past the check.
 */
export function safeEntryName(archive: string, name: string): string {
  const refuse = (why: string): never => {
    throw new DataError(archive, `refusing archive entry "${name}": ${why}`, { entry: name });
  };
  if (name.includes('\0')) refuse('the name contains a NUL byte');
  if (name.startsWith('/') || name.startsWith('\\') || /^[A-Za-z]:/.test(name)) refuse('absolute path');
  const segments = name.split(/[\\/]+/).filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) refuse("the path contains '..'");
  return segments.join('/');
}

function entryType(header: tar.Header): TarEntry['type'] {
  if (header.type === 'file' || header.type === 'contiguous-file') return 'file';
  if (header.type === 'directory') return 'directory';
  return 'other';
}

/**
 * Streams the entries of a .tar or .tar.gz (gzip detected by magic) to `onEntry`, one at a time
 * and in archive order, without writing anything to disk. Unsafe entry names are refused
 * (DataError naming the entry) before the handler sees them. Entries whose name normalises to
 * the archive root ('./') are skipped.
 */
export async function readTarEntries(path: string, onEntry: TarEntryHandler): Promise<void> {
  let gzipped: boolean;
  let compressedBytes: number;
  try {
    gzipped = await fileStartsWithGzipMagic(path);
    compressedBytes = (await stat(path)).size;
  } catch (error) {
    throw new DataError(path, `cannot read archive: ${describeError(error)}`, { cause: error });
  }
  const extract = tar.extract();
  const input = createReadStream(path);
  let streamError: unknown;
  // Entries stream through one at a time; the limiter bounds what the whole archive may inflate to.
  const feeding = (
    gzipped ? pipeline(input, createGunzip(), byteLimiter(path, compressedBytes), extract) : pipeline(input, extract)
  ).catch((error: unknown) => {
    streamError ??= error;
  });

  let current: string | undefined;
  try {
    for await (const raw of extract) {
      const entry = raw as typeof raw & AsyncIterable<Buffer>;
      current = entry.header.name;
      const name = safeEntryName(path, entry.header.name);
      let used = false;
      const claim = (): AsyncIterable<Buffer> => {
        if (used) throw new Error(`archive entry ${name} was read twice`);
        used = true;
        return entry;
      };
      if (name !== '') {
        await onEntry({
          name,
          type: entryType(entry.header),
          size: entry.header.size ?? 0,
          read: async () => {
            const chunks: Buffer[] = [];
            for await (const chunk of claim()) chunks.push(chunk);
            return Buffer.concat(chunks);
          },
          stream: claim,
        });
      }
      if (!used) for await (const _ of claim()) void _;
    }
  } catch (error) {
    extract.destroy();
    input.destroy();
    await feeding;
    if (isDataError(error)) throw error;
    if (isDataError(streamError)) throw streamError;
    const cause = streamError ?? error;
    throw new DataError(path, `corrupt or truncated archive: ${describeError(cause)}`, {
      cause,
      ...(current === undefined ? {} : { entry: current }),
    });
  }
  await feeding;
  if (isDataError(streamError)) throw streamError;
  if (streamError !== undefined) {
    throw new DataError(path, `corrupt or truncated archive: ${describeError(streamError)}`, {
      cause: streamError,
    });
  }
}

export interface ExtractOptions {
  /** Replace an existing target folder (default: refuse, so nothing is overwritten by accident). */
  replace?: boolean;
}

/**
 * Extracts regular files and folders of a .tar/.tar.gz into `targetDir`. A first pass refuses the
 * whole archive if any entry is unsafe, before anything is written. The files are then written
 * into a temporary sibling folder that is renamed to `targetDir` only when complete, so an
 * existing `targetDir` always means a complete extraction. Links and device entries are skipped:
 * dataset archives don't need them, and links are the classic way out of a target folder.
 */
export async function extractTar(archive: string, targetDir: string, options: ExtractOptions = {}): Promise<void> {
  await readTarEntries(archive, () => {});

  const target = resolve(targetDir);
  const existing = await stat(target).catch(() => undefined);
  if (existing !== undefined && options.replace !== true) {
    throw new DataError(archive, `cannot extract: target ${target} already exists`);
  }
  await mkdir(dirname(target), { recursive: true });
  const temp = join(dirname(target), `.${basename(target)}.partial-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(temp);
  try {
    await readTarEntries(archive, async (entry) => {
      const dest = resolve(temp, entry.name);
      if (!dest.startsWith(temp + sep)) {
        throw new DataError(archive, `refusing archive entry "${entry.name}": resolves outside the target`, {
          entry: entry.name,
        });
      }
      if (entry.type === 'directory') {
        await mkdir(dest, { recursive: true });
      } else if (entry.type === 'file') {
        await mkdir(dirname(dest), { recursive: true });
        await pipeline(Readable.from(entry.stream()), createWriteStream(dest));
      }
    });
    if (existing !== undefined) await rm(target, { recursive: true, force: true });
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    if (isDataError(error)) throw error;
    throw new DataError(archive, `cannot extract into ${target}: ${describeError(error)}`, { cause: error });
  }
}

export interface TarInput {
  /** Written as given: this is also how tests make hostile archives. */
  name: string;
  /** File content; omit for a directory. */
  data?: Uint8Array | string;
}

/** Writes a .tar, or a .tar.gz when `gzip` is set, from in-memory entries. */
export async function writeTar(path: string, entries: TarInput[], options: { gzip?: boolean } = {}): Promise<void> {
  const pack = tar.pack();
  const writing = options.gzip
    ? pipeline(pack, createGzip(), createWriteStream(path))
    : pipeline(pack, createWriteStream(path));
  for (const entry of entries) {
    await new Promise<void>((done, fail) => {
      const callback = (error?: Error | null): void => (error ? fail(error) : done());
      if (entry.data === undefined) pack.entry({ name: entry.name, type: 'directory', mode: 0o755 }, callback);
      else pack.entry({ name: entry.name, mode: 0o644 }, Buffer.from(entry.data), callback);
    });
  }
  pack.finalize();
  await writing;
}
