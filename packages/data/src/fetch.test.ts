import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeTar } from './archive.ts';
import type { CatalogEntry } from './catalog.ts';
import { CATALOG, FETCHABLE_DATASETS } from './catalog.ts';
import { DataError } from './errors.ts';
import type { FetchProgress } from './fetch.ts';
import { downloadFile, fetchDataset } from './fetch.ts';
import { readDataset } from './readers/index.ts';

interface Request {
  path: string;
  range?: string;
}

interface TestServer {
  baseUrl: string;
  files: Map<string, Buffer>;
  requests: Request[];
  /** Per path: how many bytes to send before dropping the connection, for the next request(s). */
  drops: Map<string, number[]>;
  /** Per path: how many bytes to send before going silent, connection left open. */
  stalls: Map<string, number[]>;
  ignoreRange: boolean;
  close(): Promise<void>;
}

/** A file server with Range support that can drop a connection mid-file on demand. */
async function startServer(): Promise<TestServer> {
  const state = {
    files: new Map<string, Buffer>(),
    requests: [] as Request[],
    drops: new Map<string, number[]>(),
    stalls: new Map<string, number[]>(),
    ignoreRange: false,
  };
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname.slice(1));
    const range = req.headers.range;
    state.requests.push({ path, ...(range === undefined ? {} : { range }) });
    const body = state.files.get(path);
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    let start = 0;
    const match = range === undefined || state.ignoreRange ? null : /^bytes=(\d+)-$/.exec(range);
    if (match !== null) {
      start = Number(match[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else {
      res.writeHead(200, { 'content-length': body.length, 'accept-ranges': 'bytes' });
    }
    const drop = state.drops.get(path)?.shift();
    if (drop !== undefined) {
      res.write(body.subarray(start, start + drop), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    const stall = state.stalls.get(path)?.shift();
    if (stall !== undefined) {
      res.write(body.subarray(start, start + stall));
      return;
    }
    res.end(body.subarray(start));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    baseUrl: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  });
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A deterministic pseudo-random payload, so a splice at the wrong offset changes the hash. */
function payload(size: number): Buffer {
  const out = Buffer.alloc(size);
  let x = 12345;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

async function caught(promise: Promise<unknown>): Promise<DataError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DataError);
  return error as DataError;
}

/** A CIFAR-10 binary release of one record per batch file, packed like the publisher's. */
async function tinyCifar10(path: string): Promise<void> {
  const record = (label: number): Buffer => Buffer.concat([Buffer.from([label]), Buffer.alloc(3072, label * 20)]);
  const names = ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch'];
  await writeTar(
    path,
    [
      { name: 'cifar-10-batches-bin/' },
      ...names.map((name, i) => ({ name: `cifar-10-batches-bin/${name}.bin`, data: record(i) })),
    ],
    { gzip: true },
  );
}

function idxGz(dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return gzipSync(Buffer.concat([header, data]));
}

let dir: string;
let server: TestServer;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transferlab-fetch-'));
  server = await startServer();
});
afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** The built-in entry, pointed at files this test serves and pinned to their hashes. */
function pinned(name: 'cifar10' | 'mnist' | 'fashion-mnist', sums: Record<string, string | undefined>): CatalogEntry {
  const entry = CATALOG[name];
  return { ...entry, files: entry.files.map((file) => ({ ...file, sha256: sums[file.name] })) };
}

describe('fetchDataset', () => {
  it('downloads, verifies and extracts an archive, then reads it; a second call reuses it', async () => {
    const archive = join(dir, 'made.tar.gz');
    await tinyCifar10(archive);
    const bytes = await readFile(archive);
    server.files.set('cifar-10-binary.tar.gz', bytes);
    const progress: FetchProgress[] = [];
    const options = {
      dir: join(dir, 'datasets'),
      baseUrl: server.baseUrl,
      catalog: { cifar10: pinned('cifar10', { 'cifar-10-binary.tar.gz': sha256(bytes) }) },
      onProgress: (p: FetchProgress) => progress.push(p),
    };
    const source = await fetchDataset('cifar10', options);
    expect(source).toEqual({ kind: 'cifar10', path: join(dir, 'datasets', 'cifar10', 'extracted') });
    expect(progress.at(-1)).toEqual({ file: 'cifar-10-binary.tar.gz', bytes: bytes.length, total: bytes.length });
    expect(await readdir(join(dir, 'datasets', 'cifar10'))).toEqual(['cifar-10-binary.tar.gz', 'extracted']);
    const ds = await readDataset(source);
    expect(ds.train.count).toBe(5);
    expect([...ds.train.labels]).toEqual([0, 1, 2, 3, 4]);
    expect(ds.test?.count).toBe(1);

    const requests = server.requests.length;
    expect(await fetchDataset('cifar10', options)).toEqual(source);
    expect(server.requests.length).toBe(requests);
  });

  it('fetches the four IDX files of an MNIST-family dataset with its class names', async () => {
    const files = {
      'train-images-idx3-ubyte.gz': idxGz([3, 28, 28], new Uint8Array(3 * 784).fill(9)),
      'train-labels-idx1-ubyte.gz': idxGz([3], new Uint8Array([0, 5, 9])),
      't10k-images-idx3-ubyte.gz': idxGz([1, 28, 28], new Uint8Array(784)),
      't10k-labels-idx1-ubyte.gz': idxGz([1], new Uint8Array([2])),
    };
    const sums: Record<string, string> = {};
    for (const [name, bytes] of Object.entries(files)) {
      server.files.set(name, bytes);
      sums[name] = sha256(bytes);
    }
    const source = await fetchDataset('fashion-mnist', {
      dir,
      baseUrl: `${server.baseUrl}/`,
      catalog: { 'fashion-mnist': pinned('fashion-mnist', sums) },
    });
    expect(source.kind).toBe('idx');
    const ds = await readDataset(source);
    expect(ds.name).toBe('fashion-mnist');
    expect(ds.classes[9]).toBe('Ankle boot');
    expect(ds.shape).toEqual([28, 28, 1]);
    expect([...ds.train.labels]).toEqual([0, 5, 9]);
    expect(ds.test?.count).toBe(1);
  });

  it('resumes with a Range request after the connection drops mid-file', async () => {
    const bytes = payload(300_000);
    server.files.set('big.bin', bytes);
    server.drops.set('big.bin', [100_000]);
    const dest = join(dir, 'big.bin');
    await downloadFile([`${server.baseUrl}/big.bin`], dest, { sha256: sha256(bytes), retryDelayMs: 0 });
    expect(sha256(await readFile(dest))).toBe(sha256(bytes));
    expect(await exists(`${dest}.part`)).toBe(false);
    expect(server.requests).toHaveLength(2);
    expect(server.requests[0]!.range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(server.requests[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(100_000);
  });

  it('gives up on a stalled connection and resumes in a new one', async () => {
    const bytes = payload(50_000);
    server.files.set('slow.bin', bytes);
    server.stalls.set('slow.bin', [20_000]);
    const dest = join(dir, 'slow.bin');
    await downloadFile([`${server.baseUrl}/slow.bin`], dest, {
      sha256: sha256(bytes),
      idleTimeoutMs: 300,
      retryDelayMs: 0,
    });
    expect(server.requests).toHaveLength(2);
    expect(server.requests[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(sha256(await readFile(dest))).toBe(sha256(bytes));
  });

  it('resumes a .part left by an earlier run that gave up', async () => {
    const archive = join(dir, 'made.tar.gz');
    await tinyCifar10(archive);
    const bytes = await readFile(archive);
    server.files.set('cifar-10-binary.tar.gz', bytes);
    server.drops.set('cifar-10-binary.tar.gz', [bytes.length >> 1]);
    const options = {
      dir: join(dir, 'datasets'),
      baseUrl: server.baseUrl,
      catalog: { cifar10: pinned('cifar10', { 'cifar-10-binary.tar.gz': sha256(bytes) }) },
      retries: 0,
    };
    const first = await caught(fetchDataset('cifar10', options));
    expect(first.message).toMatch(/download failed/);
    expect(first.message).toContain('cifar-10-binary.tar.gz');
    const part = join(dir, 'datasets', 'cifar10', 'cifar-10-binary.tar.gz.part');
    const kept = (await stat(part)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(bytes.length);
    expect(await exists(join(dir, 'datasets', 'cifar10', 'extracted'))).toBe(false);

    const source = await fetchDataset('cifar10', options);
    expect(server.requests.at(-1)!.range).toBe(`bytes=${kept}-`);
    expect((await readDataset(source)).train.count).toBe(5);
  });

  it('starts over when the server ignores the Range header', async () => {
    const bytes = payload(10_000);
    server.files.set('f.bin', bytes);
    server.ignoreRange = true;
    const dest = join(dir, 'f.bin');
    await writeFile(`${dest}.part`, Buffer.from('stale bytes from some other file'));
    await downloadFile([`${server.baseUrl}/f.bin`], dest, { sha256: sha256(bytes) });
    expect(server.requests[0]!.range).toBe('bytes=32-');
    expect(sha256(await readFile(dest))).toBe(sha256(bytes));
  });

  it('finishes a .part that already holds every byte (416 from the server)', async () => {
    const bytes = payload(5_000);
    server.files.set('f.bin', bytes);
    const dest = join(dir, 'f.bin');
    await writeFile(`${dest}.part`, bytes);
    await downloadFile([`${server.baseUrl}/f.bin`], dest, { sha256: sha256(bytes) });
    expect(await readFile(dest)).toEqual(bytes);
  });

  it('on a checksum mismatch deletes the .part and names file, expected and actual', async () => {
    const bytes = payload(20_000);
    server.files.set('cifar-10-binary.tar.gz', bytes);
    const wrong = 'ab'.repeat(32);
    const error = await caught(
      fetchDataset('cifar10', {
        dir,
        baseUrl: server.baseUrl,
        catalog: { cifar10: pinned('cifar10', { 'cifar-10-binary.tar.gz': wrong }) },
      }),
    );
    const dest = join(dir, 'cifar10', 'cifar-10-binary.tar.gz');
    expect(error.file).toBe(dest);
    expect(error.message).toContain(dest);
    expect(error.message).toContain(`expected ${wrong}`);
    expect(error.message).toContain(`actual ${sha256(bytes)}`);
    expect(await exists(`${dest}.part`)).toBe(false);
    expect(await exists(dest)).toBe(false);
  });

  it('reports a 404 naming the file and URL, without retrying it', async () => {
    const error = await caught(
      fetchDataset('cifar10', {
        dir,
        baseUrl: server.baseUrl,
        catalog: { cifar10: pinned('cifar10', { 'cifar-10-binary.tar.gz': 'cd'.repeat(32) }) },
        retryDelayMs: 0,
      }),
    );
    expect(error.message).toContain('cifar-10-binary.tar.gz');
    expect(error.message).toContain(`HTTP 404`);
    expect(error.message).toContain(`${server.baseUrl}/cifar-10-binary.tar.gz`);
    expect(server.requests).toHaveLength(1);
  });

  it('tries the next URL when one fails', async () => {
    const bytes = payload(1_000);
    server.files.set('mirror/f.bin', bytes);
    const dest = join(dir, 'f.bin');
    await downloadFile([`${server.baseUrl}/gone/f.bin`, `${server.baseUrl}/mirror/f.bin`], dest, {
      sha256: sha256(bytes),
    });
    expect(server.requests.map((r) => r.path)).toEqual(['gone/f.bin', 'mirror/f.bin']);
  });

  it('refuses files without a pinned sha256 unless told to skip the check', async () => {
    const bytes = payload(1_000);
    server.files.set('cifar-10-binary.tar.gz', bytes);
    const options = {
      dir,
      baseUrl: server.baseUrl,
      catalog: { cifar10: pinned('cifar10', { 'cifar-10-binary.tar.gz': undefined }) },
    };
    await expect(fetchDataset('cifar10', options)).rejects.toThrow(/no pinned sha256.*insecureSkipChecksum/);
    expect(server.requests).toHaveLength(0);
    await expect(downloadFile([`${server.baseUrl}/x`], join(dir, 'x'))).rejects.toThrow(/no pinned sha256/);

    const dest = join(dir, 'unchecked.bin');
    await downloadFile([`${server.baseUrl}/cifar-10-binary.tar.gz`], dest, { insecureSkipChecksum: true });
    expect(await readFile(dest)).toEqual(bytes);
  });

  it('checks a file already in place instead of downloading it again', async () => {
    const bytes = payload(1_000);
    const dest = join(dir, 'have.bin');
    await mkdir(dir, { recursive: true });
    await writeFile(dest, bytes);
    await downloadFile([`${server.baseUrl}/have.bin`], dest, { sha256: sha256(bytes) });
    expect(server.requests).toHaveLength(0);
    await expect(downloadFile([`${server.baseUrl}/have.bin`], dest, { sha256: 'ef'.repeat(32) })).rejects.toThrow(
      /sha256 mismatch.*delete the file/,
    );
  });
});

describe('catalog', () => {
  it('pins a sha256 for every file of every fetchable dataset', () => {
    for (const name of FETCHABLE_DATASETS) {
      const entry = CATALOG[name];
      expect(entry.name).toBe(name);
      expect(entry.files.length).toBeGreaterThan(0);
      for (const file of entry.files) {
        expect(file.sha256, `${name}/${file.name}`).toMatch(/^[0-9a-f]{64}$/);
        for (const base of file.baseUrls) expect(base).toMatch(/^https?:\/\/.+\/$/);
      }
    }
    expect(CATALOG.mnist.files.map((f) => f.role).sort()).toEqual([
      'testImages',
      'testLabels',
      'trainImages',
      'trainLabels',
    ]);
    expect(CATALOG.cifar100.classes).toHaveLength(100);
  });
});
