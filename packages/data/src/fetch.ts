import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import { extractTar } from './archive.ts';
import type { CatalogEntry, CatalogFile, FetchableDataset } from './catalog.ts';
import { CATALOG } from './catalog.ts';
import type { DatasetSource } from './dataset.ts';
import { DataError, describeError } from './errors.ts';

export interface FetchProgress {
  /** File name, as in the catalog. */
  file: string;
  /** Bytes on disk so far, including those of a resumed partial download. */
  bytes: number;
  total?: number;
}

export type FetchImpl = typeof globalThis.fetch;

export interface DownloadOptions {
  /** Expected sha256 (hex); required unless `insecureSkipChecksum`. */
  sha256?: string;
  /** Download even without a pinned sha256. Integrity is then not checked at all. */
  insecureSkipChecksum?: boolean;
  onProgress?(p: FetchProgress): void;
  fetchImpl?: FetchImpl;
  /** Further attempts per URL after a dropped connection or a server error, each resuming. Default 3. */
  retries?: number;
  /** Wait before attempt k is k times this. Default 500 ms. */
  retryDelayMs?: number;
  signal?: AbortSignal;
  /** Give up on an attempt (and resume in the next) when no byte arrives for this long. Default 60 s. */
  idleTimeoutMs?: number;
}

export interface FetchOptions extends Omit<DownloadOptions, 'sha256'> {
  /** Datasets go to `<dir>/<name>/`. */
  dir: string;
  /** Fetch every file from `<baseUrl>/<file name>` instead of the catalog's URLs (tests, local mirrors). */
  baseUrl?: string;
  /** Entries that replace the built-in catalog's (tests, private mirrors). */
  catalog?: Partial<Record<FetchableDataset, CatalogEntry>>;
  /**
   * A local copy to import instead of downloading: the file itself for a one-file dataset, or a
   * folder holding the files under their catalog names. Each is checked against its pinned sha256.
   */
  from?: string;
}

/** Failure of one HTTP attempt; `permanent` ones are not retried on the same URL. */
class TransferError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
  ) {
    super(message);
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

async function sizeOf(path: string): Promise<number | undefined> {
  const info = await stat(path).catch(() => undefined);
  return info?.size;
}

function parseContentRange(header: string | null): { start: number; total?: number } | undefined {
  const match = header === null ? null : /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(header.trim());
  if (match === null) return undefined;
  return {
    start: match[1] === undefined ? -1 : Number(match[1]),
    ...(match[2] === '*' ? {} : { total: Number(match[2]) }),
  };
}

/**
 * One HTTP attempt that appends to `part`, asking only for the bytes it lacks. Returns when the
 * server has sent everything it announced; throws TransferError otherwise, leaving what arrived
 * on disk for the next attempt.
 */
async function transfer(url: string, part: string, label: string, options: DownloadOptions): Promise<void> {
  // A stalled connection would otherwise hang forever: abort it and let the next attempt resume.
  const idle = new AbortController();
  const idleMs = options.idleTimeoutMs ?? 60_000;
  let timer = setTimeout(() => idle.abort(), idleMs);
  const touch = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => idle.abort(), idleMs);
  };
  try {
    await transferWithin(url, part, label, {
      ...options,
      signal: options.signal ? AbortSignal.any([options.signal, idle.signal]) : idle.signal,
      touch,
    });
  } catch (error) {
    options.signal?.throwIfAborted();
    if (idle.signal.aborted && !(error instanceof TransferError && error.permanent)) {
      throw new TransferError(`${url}: no data for ${idleMs} ms`, false);
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function transferWithin(
  url: string,
  part: string,
  label: string,
  options: DownloadOptions & { signal: AbortSignal; touch(): void },
): Promise<void> {
  const fetchImpl = options.fetchImpl ?? globalThis.fetch;
  let offset = (await sizeOf(part)) ?? 0;
  // Identity: a server that gzips on the fly would hand fetch() bytes it then silently inflates,
  // breaking both the checksum and byte offsets for Range.
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (offset > 0) headers.range = `bytes=${offset}-`;
  let response: Response;
  try {
    response = await fetchImpl(url, { headers, signal: options.signal });
  } catch (error) {
    throw new TransferError(`request to ${url} failed: ${describeError(error)}`, false);
  }

  let total: number | undefined;
  if (response.status === 416 && offset > 0) {
    await response.body?.cancel();
    const range = parseContentRange(response.headers.get('content-range'));
    // The partial file already holds every byte: only the rename was missing last time.
    if (range?.total === offset) return;
    await rm(part, { force: true });
    throw new TransferError(`${url}: stale partial download (${offset} bytes) discarded`, false);
  } else if (response.status === 206) {
    const range = parseContentRange(response.headers.get('content-range'));
    if (range === undefined || range.start !== offset) {
      await response.body?.cancel();
      await rm(part, { force: true });
      throw new TransferError(`${url}: server answered a different range than asked for`, false);
    }
    total = range.total;
  } else if (response.status === 200) {
    // The server ignored the Range header (or none was sent): start over.
    offset = 0;
    const length = response.headers.get('content-length');
    if (length !== null) total = Number(length);
  } else {
    await response.body?.cancel();
    const permanent =
      response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429;
    throw new TransferError(`HTTP ${response.status} ${response.statusText} from ${url}`, permanent);
  }
  if (response.body === null) throw new TransferError(`${url}: response has no body`, false);

  let bytes = offset;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      options.touch();
      bytes += chunk.length;
      options.onProgress?.({ file: label, bytes, ...(total === undefined ? {} : { total }) });
      done(null, chunk);
    },
  });
  try {
    await pipeline(
      Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
      count,
      createWriteStream(part, { flags: offset > 0 ? 'a' : 'w' }),
    );
  } catch (error) {
    throw new TransferError(`download of ${url} interrupted at byte ${bytes}: ${describeError(error)}`, false);
  }
  const size = (await sizeOf(part)) ?? 0;
  if (total !== undefined && size !== total) {
    throw new TransferError(`${url}: connection closed at byte ${size} of ${total}`, false);
  }
}

/**
 * Downloads to `dest` through `dest + '.part'`, resuming a partial file with an HTTP Range request,
 * retrying dropped connections and server errors, trying the URLs in order, and checking the
 * sha256 before renaming into place. An existing `dest` is checked, not downloaded again.
 */
export async function downloadFile(urls: string[], dest: string, options: DownloadOptions = {}): Promise<void> {
  const expected = options.sha256?.toLowerCase();
  if (expected === undefined && options.insecureSkipChecksum !== true) {
    throw new DataError(
      dest,
      'no pinned sha256 for this file: refusing to download it unchecked (pass insecureSkipChecksum to accept that risk)',
    );
  }
  const label = basename(dest);

  if ((await sizeOf(dest)) !== undefined) {
    if (expected === undefined) return;
    const actual = await sha256File(dest);
    if (actual === expected) return;
    throw new DataError(
      dest,
      `sha256 mismatch: expected ${expected}, actual ${actual}; delete the file to download it again`,
    );
  }

  const part = `${dest}.part`;
  const retries = options.retries ?? 3;
  const delay = options.retryDelayMs ?? 500;
  const failures: string[] = [];
  for (const url of urls) {
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0 && delay > 0) await sleep(delay * attempt);
      options.signal?.throwIfAborted();
      try {
        await transfer(url, part, label, options);
      } catch (error) {
        if (!(error instanceof TransferError)) throw error;
        failures.push(error.message);
        if (error.permanent) break;
        continue;
      }
      if (expected !== undefined) {
        const actual = await sha256File(part);
        if (actual !== expected) {
          await rm(part, { force: true });
          throw new DataError(
            dest,
            `sha256 mismatch: expected ${expected}, actual ${actual} (downloaded from ${url}; partial file deleted)`,
          );
        }
      }
      await rename(part, dest);
      return;
    }
  }
  throw new DataError(dest, `download failed: ${failures.join('; ')}`);
}

async function isFolder(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

/**
 * Copies a local file into the data folder once its sha256 matches the pinned one; the copy
 * appears under its final name only when complete.
 */
async function importFile(source: string, dest: string, sha256: string | undefined): Promise<void> {
  if (sha256 === undefined)
    throw new DataError(source, 'no pinned sha256 for this file: refusing to import it unchecked');
  const actual = await sha256File(source).catch((error: unknown) => {
    throw new DataError(source, `cannot read the local copy: ${describeError(error)}`);
  });
  if (actual !== sha256.toLowerCase()) {
    throw new DataError(
      source,
      `sha256 mismatch: the catalog pins ${sha256}, this file has ${actual}: not the same data`,
    );
  }
  if ((await sizeOf(dest)) !== undefined && (await sha256File(dest)) === actual) return;
  const part = `${dest}.part`;
  await copyFile(source, part);
  await rename(part, dest);
}

function urlsFor(file: CatalogFile, baseUrl: string | undefined): string[] {
  if (baseUrl !== undefined) return [`${baseUrl.replace(/\/+$/, '')}/${file.name}`];
  return file.baseUrls.map((base) => `${base}${file.name}`);
}

/**
 * Downloads a dataset's files from its publisher into `<dir>/<name>/`, checks them against the
 * catalog's pinned sha256, extracts archives (into `<dir>/<name>/extracted/`), and returns the
 * source to read it with. Calling it again reuses what is already there.
 */
export async function fetchDataset(name: FetchableDataset, options: FetchOptions): Promise<DatasetSource> {
  const entry = options.catalog?.[name] ?? CATALOG[name];
  if (entry === undefined) throw new DataError(name, `unknown dataset "${name}"`);
  const missing = entry.files.filter((file) => file.sha256 === undefined).map((file) => file.name);
  if (missing.length > 0 && options.insecureSkipChecksum !== true) {
    throw new DataError(
      missing[0]!,
      `no pinned sha256 for ${missing.join(', ')} of ${name}: refusing to download unchecked files ` +
        '(pass insecureSkipChecksum to accept that risk)',
    );
  }
  const dir = join(options.dir, name);
  await mkdir(dir, { recursive: true });
  for (const file of entry.files) {
    const dest = join(dir, file.name);
    if (options.from !== undefined) {
      const source =
        entry.files.length === 1 && !(await isFolder(options.from)) ? options.from : join(options.from, file.name);
      await importFile(source, dest, file.sha256);
      continue;
    }
    const urls = urlsFor(file, options.baseUrl);
    if (urls.length === 0 && (await sizeOf(dest)) === undefined) {
      throw new DataError(
        dest,
        `${name} has no download address: import a copy of ${file.name} with \`transferlab data fetch ${name} --from FILE\``,
      );
    }
    const { baseUrl: _baseUrl, catalog: _catalog, dir: _dir, from: _from, ...download } = options;
    await downloadFile(urls, dest, {
      ...download,
      ...(file.sha256 === undefined ? {} : { sha256: file.sha256 }),
    });
  }

  switch (entry.layout) {
    case 'cifar10-archive':
    case 'cifar100-archive': {
      const archive = entry.files[0];
      if (archive === undefined) throw new DataError(dir, `catalog entry ${name} lists no archive`);
      const extracted = join(dir, 'extracted');
      // extractTar renames into place only when complete, so an existing folder is a whole one.
      if ((await sizeOf(extracted)) === undefined) await extractTar(join(dir, archive.name), extracted);
      return entry.layout === 'cifar10-archive'
        ? { kind: 'cifar10', path: extracted }
        : { kind: 'cifar100', path: extracted, labels: 'fine' };
    }
    case 'image-folder-archive': {
      const archive = entry.files[0];
      const shape = entry.imageShape;
      if (archive === undefined || shape === undefined)
        throw new DataError(dir, `catalog entry ${name} lists no archive or image shape`);
      return {
        kind: 'image-folder',
        path: join(dir, archive.name),
        train: 'train',
        test: 'test',
        imageSize: [shape[0], shape[1]],
        channels: shape[2],
      };
    }
    case 'idx': {
      const path = (role: string): string | undefined => {
        const file = entry.files.find((f) => f.role === role);
        return file === undefined ? undefined : join(dir, file.name);
      };
      const trainImages = path('trainImages');
      const trainLabels = path('trainLabels');
      if (trainImages === undefined || trainLabels === undefined) {
        throw new DataError(dir, `catalog entry ${name} lacks training images or labels`);
      }
      const testImages = path('testImages');
      const testLabels = path('testLabels');
      return {
        kind: 'idx',
        trainImages,
        trainLabels,
        ...(testImages === undefined ? {} : { testImages }),
        ...(testLabels === undefined ? {} : { testLabels }),
        classes: entry.classes,
      };
    }
  }
}
