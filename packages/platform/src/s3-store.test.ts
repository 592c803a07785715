/**
 * S3Store against a real S3 server: Ceph radosgw. With TRANSFERLAB_S3_ENDPOINT (and the other
 * TRANSFERLAB_S3_* variables) set, the tests use that server; otherwise they start a throwaway
 * cluster with scripts/radosgw-start.sh and stop it afterwards. When no server can be had the
 * tests fail: they never skip.
 *
 * The retry tests use a fake S3 server (a few lines of node:http below) that fails on purpose.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ObjectNotFoundError } from './object-store.ts';
import { describeObjectStoreContract } from './object-store.contract.ts';
import { S3ConfigError, type S3StoreOptions, s3StoreOptionsFromEnv } from './s3-config.ts';
import { CONTENT_SHA256_METADATA, ObjectIntegrityError, S3Store, S3StoreError } from './s3-store.ts';

const execFileAsync = promisify(execFile);
const scriptsDir = fileURLToPath(new URL('../../../scripts/', import.meta.url));
const MiB = 1024 * 1024;

/** Server settings (bucket aside), known once beforeAll has run. */
let server: S3StoreOptions | undefined;
/** Why there is no server: every test that needs one fails with it (none is skipped). */
let serverProblem: Error | undefined;
let clusterDir: string | undefined;
const runId = randomBytes(4).toString('hex');
let bucketCount = 0;

function freshBucket(): string {
  return `tl-test-${runId}-${++bucketCount}`;
}

function serverOptions(): S3StoreOptions {
  if (serverProblem) throw serverProblem;
  if (!server) throw new Error('the S3 server settings are missing: beforeAll did not run');
  return server;
}

function store(overrides: Partial<S3StoreOptions> = {}): S3Store {
  return new S3Store({ ...serverOptions(), bucket: freshBucket(), ...overrides });
}

function rawClient(overrides: { secretKey?: string } = {}): Client {
  const options = serverOptions();
  return new Client({
    endPoint: options.endPoint,
    port: options.port,
    useSSL: options.useSSL,
    accessKey: options.accessKey,
    secretKey: overrides.secretKey ?? options.secretKey,
    region: options.region,
    pathStyle: true,
  });
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

function parseEnvLines(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^(TRANSFERLAB_S3_[A-Z_]+)=(.*)$/.exec(line.trim());
    if (match?.[1] !== undefined && match[2] !== undefined) env[match[1]] = match[2];
  }
  return env;
}

beforeAll(async () => {
  try {
    server = await findOrStartServer();
  } catch (error) {
    // Recorded rather than thrown: a failing beforeAll would mark the tests skipped.
    serverProblem = error as Error;
    console.error(serverProblem.message);
  }
}, 180_000);

async function findOrStartServer(): Promise<S3StoreOptions> {
  if (process.env.TRANSFERLAB_S3_ENDPOINT) {
    return s3StoreOptionsFromEnv({ TRANSFERLAB_S3_BUCKET: 'transferlab-test', ...process.env });
  }
  clusterDir = await mkdtemp(join(tmpdir(), 'tl-radosgw-'));
  const port = await freePort();
  const started = performance.now();
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await execFileAsync(
      'bash',
      [join(scriptsDir, 'radosgw-start.sh'), clusterDir, String(port)],
      {
        timeout: 170_000,
      },
    ));
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    throw new Error(
      `TRANSFERLAB_S3_ENDPOINT is not set and scripts/radosgw-start.sh could not start radosgw, ` +
        `so the S3 tests cannot run:\n${failure.stderr || failure.message}`,
    );
  }
  console.info(`radosgw cold start: ${Math.round(performance.now() - started)} ms (${clusterDir})\n${stderr.trim()}`);
  return s3StoreOptionsFromEnv(parseEnvLines(stdout));
}

afterAll(async () => {
  if (clusterDir === undefined) return;
  await execFileAsync('bash', [join(scriptsDir, 'radosgw-stop.sh'), clusterDir], { timeout: 60_000 });
  await rm(clusterDir, { recursive: true, force: true });
}, 70_000);

describeObjectStoreContract('s3 (radosgw)', async () => store());
describeObjectStoreContract('s3 (radosgw, key prefix in a shared bucket)', async () =>
  store({ bucket: `tl-test-${runId}-shared`, prefix: `runs/${randomBytes(4).toString('hex')}` }),
);

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

describe('S3Store on radosgw', () => {
  it('puts a multi-part object in parts and reads it back whole', async () => {
    const s3 = store({ partSize: 5 * MiB });
    const bytes = randomBytes(12 * MiB + 123);
    await s3.put('ckpt/model.bin', bytes, { metadata: { sha256: sha256(bytes), Epoch: '7' } });
    // A multipart object's ETag ends in -<number of parts>.
    const raw = await rawClient().statObject(s3.bucket, 'ckpt/model.bin');
    expect(raw.etag).toMatch(/-3$/);
    expect((await s3.get('ckpt/model.bin')).equals(bytes)).toBe(true);
    expect(await s3.stat('ckpt/model.bin')).toEqual({
      size: bytes.length,
      metadata: { sha256: sha256(bytes), epoch: '7' },
    });
    // No unfinished upload is left behind.
    const pending: unknown[] = [];
    for await (const upload of rawClient().listIncompleteUploads(s3.bucket, '', true)) pending.push(upload);
    expect(pending).toEqual([]);
  });

  it('puts and gets an object above 64 MiB with the default part size', async () => {
    const s3 = store();
    const bytes = randomBytes(70 * MiB);
    await s3.put('big/blob', bytes);
    expect((await rawClient().statObject(s3.bucket, 'big/blob')).etag).toMatch(/-5$/);
    expect(sha256(await s3.get('big/blob'))).toBe(sha256(bytes));
    await s3.delete('big/blob');
  });

  it('does not resume an unfinished upload of the same key left by someone else', async () => {
    const s3 = store({ partSize: 5 * MiB });
    const raw = rawClient();
    await s3.put('seed', new Uint8Array([1]));
    // The minio client's own putObject would pick this upload up, with its metadata.
    await raw.initiateNewMultipartUpload(s3.bucket, 'ckpt/x', { 'x-amz-meta-owner': 'someone-else' });
    const bytes = randomBytes(11 * MiB);
    await s3.put('ckpt/x', bytes, { metadata: { owner: 'me' } });
    expect((await s3.stat('ckpt/x'))?.metadata).toEqual({ owner: 'me' });
    expect((await s3.get('ckpt/x')).equals(bytes)).toBe(true);
  });

  it('records the content sha256 and detects bytes that do not match it', async () => {
    const s3 = store();
    const raw = rawClient();
    const original = Buffer.from('the original bytes');
    await s3.put('cells/a/result.json', original, { metadata: { kind: 'result' } });
    const recorded = (await raw.statObject(s3.bucket, 'cells/a/result.json')).metaData;
    expect(recorded[CONTENT_SHA256_METADATA]).toBe(sha256(original));
    // The store's own hash is not user metadata.
    expect((await s3.stat('cells/a/result.json'))?.metadata).toEqual({ kind: 'result' });

    // Someone overwrites the bytes but keeps the old metadata.
    const tampered = Buffer.from('other bytes, same metadata');
    await raw.putObject(s3.bucket, 'cells/a/result.json', tampered, tampered.length, {
      [`x-amz-meta-${CONTENT_SHA256_METADATA}`]: sha256(original),
      'x-amz-meta-kind': 'result',
    });
    const failure = await s3.get('cells/a/result.json').catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ObjectIntegrityError);
    expect(String(failure)).toContain('cells/a/result.json');
    expect(String(failure)).toContain(sha256(original));
    expect(String(failure)).toContain(sha256(tampered));

    // An object written by another tool, without a recorded hash, reads fine.
    await raw.putObject(s3.bucket, 'cells/a/foreign', tampered, tampered.length);
    expect((await s3.get('cells/a/foreign')).equals(tampered)).toBe(true);
  });

  it('rejects a wrong secret key with an error, for every operation', async () => {
    const good = store();
    await good.put('x', new Uint8Array([1]));
    const bad = new S3Store({ ...serverOptions(), bucket: good.bucket, secretKey: 'not-the-secret' });
    for (const attempt of [
      () => bad.put('y', new Uint8Array([2])),
      () => bad.get('x'),
      () => bad.stat('x'),
      () => bad.list(''),
      () => bad.delete('x'),
    ]) {
      const failure = await attempt().catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(S3StoreError);
      expect((failure as S3StoreError).code).toMatch(/^(SignatureDoesNotMatch|AccessDenied)$/);
      expect(String(failure)).toContain(`s3://${good.bucket}`);
    }
    const unknownKey = new S3Store({ ...serverOptions(), bucket: good.bucket, accessKey: 'NOSUCHACCESSKEY00000' });
    await expect(unknownKey.get('x')).rejects.toThrow(/InvalidAccessKeyId|AccessDenied/);
    // Nothing got through.
    expect(await good.list('')).toEqual(['x']);
  });

  it('lists across pages (small pages)', async () => {
    const s3 = store({ listPageSize: 7 });
    const keys = Array.from({ length: 45 }, (_, i) => `p/${String(i).padStart(3, '0')}/x`);
    await Promise.all([...keys, 'q/1', 'p-not-under/1'].map((key) => s3.put(key, new Uint8Array([1]))));
    expect(await s3.list('p/')).toEqual(keys);
    expect(await s3.list('p/01')).toEqual(keys.slice(10, 20));
    expect(await s3.list('nothing/')).toEqual([]);
  });

  it('lists more than 1000 keys (S3 pages at 1000)', async () => {
    const s3 = store({ prefix: 'deep/prefix' });
    const keys = Array.from({ length: 1100 }, (_, i) => `many/${String(i).padStart(4, '0')}`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < keys.length) await s3.put(keys[next++]!, new Uint8Array([next % 256]));
      }),
    );
    const listed = await s3.list('many/');
    expect(listed.length).toBe(1100);
    expect(listed).toEqual(keys);
  });

  it('creates its bucket on first use, once, even when stores race', async () => {
    const bucket = freshBucket();
    const raw = rawClient();
    expect(await raw.bucketExists(bucket)).toBe(false);
    const stores = Array.from({ length: 4 }, () => new S3Store({ ...serverOptions(), bucket }));
    await Promise.all(stores.map((s3, i) => s3.put(`k${i}`, new Uint8Array([i]))));
    expect(await raw.bucketExists(bucket)).toBe(true);
    expect(await stores[0]!.list('')).toEqual(['k0', 'k1', 'k2', 'k3']);

    // Reads on a bucket nobody wrote to yet: absent, not an error about the bucket.
    const empty = store();
    expect(await empty.list('')).toEqual([]);
    expect(await empty.stat('a')).toBeUndefined();
    await expect(empty.get('a')).rejects.toBeInstanceOf(ObjectNotFoundError);
    await empty.delete('a');

    // A bucket removed behind the store's back comes back on the next put.
    const s3 = store();
    await s3.put('a', new Uint8Array([1]));
    await s3.delete('a');
    await raw.removeBucket(s3.bucket);
    await s3.put('b', new Uint8Array([2]));
    expect(await s3.list('')).toEqual(['b']);
  });

  it('keeps keys under its prefix and hides it', async () => {
    const bucket = freshBucket();
    const one = new S3Store({ ...serverOptions(), bucket, prefix: '/team/run1/' });
    const two = new S3Store({ ...serverOptions(), bucket, prefix: 'team/run2' });
    await one.put('a/b', new Uint8Array([1]));
    await two.put('a/c', new Uint8Array([2]));
    expect(one.describe('a/b')).toBe(`s3://${bucket}/team/run1/a/b`);
    expect(await one.list('')).toEqual(['a/b']);
    expect(await one.list('a/')).toEqual(['a/b']);
    expect(await two.list('')).toEqual(['a/c']);
    const names: string[] = [];
    for await (const item of rawClient().listObjectsV2(bucket, '', true)) names.push((item as { name: string }).name);
    expect(names.sort()).toEqual(['team/run1/a/b', 'team/run2/a/c']);
    await expect(one.get('a/c')).rejects.toThrow(/a\/c.*s3:\/\/.*team\/run1/);
  });

  it('round-trips user metadata with lower-case keys and refuses what S3 cannot carry', async () => {
    const s3 = store();
    await s3.put('m', new Uint8Array([1, 2, 3]), {
      metadata: { 'Content-Type': 'application/json', SplitId: 'abc', 'x.y-z': 'a value with spaces' },
    });
    expect(await s3.stat('m')).toEqual({
      size: 3,
      metadata: { 'content-type': 'application/json', splitid: 'abc', 'x.y-z': 'a value with spaces' },
    });
    expect((await rawClient().statObject(s3.bucket, 'm')).metaData['content-type']).toBe('application/json');
    await s3.put('plain', new Uint8Array([]));
    expect(await s3.stat('plain')).toEqual({ size: 0, metadata: {} });
    expect(await s3.get('plain')).toHaveLength(0);
    await expect(s3.put('r', new Uint8Array([1]), { metadata: { [CONTENT_SHA256_METADATA]: 'x' } })).rejects.toThrow(
      /reserved/,
    );
    await expect(s3.put('r', new Uint8Array([1]), { metadata: { note: 'caf\u00e9' } })).rejects.toThrow(/note.*ASCII/);
    await expect(s3.put('r', new Uint8Array([1]), { metadata: { 'bad key': 'v' } })).rejects.toThrow(/bad key/);
    await expect(s3.put('r', new Uint8Array([1]), { metadata: { snake_case: 'v' } })).rejects.toThrow(/snake_case/);
    await expect(s3.put('r', new Uint8Array([1]), { metadata: { A: '1', a: '2' } })).rejects.toThrow(/twice/);
  });
});

describe('S3Store retries (against a fake S3 server)', () => {
  /** A fake S3 endpoint: the bucket exists; object HEAD requests get the scripted answers. */
  async function fakeS3(
    answer: (attempt: number, request: IncomingMessage, response: ServerResponse) => void,
    options: Partial<S3StoreOptions> = {},
  ): Promise<{ store: S3Store; attempts: () => number; close: () => Promise<void> }> {
    let attempts = 0;
    const fake = createServer((request, response) => {
      const path = new URL(request.url ?? '/', 'http://fake').pathname;
      if (request.method === 'HEAD' && path === '/bucket') {
        response.end();
        return;
      }
      answer(++attempts, request, response);
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const { port } = fake.address() as AddressInfo;
    const s3 = new S3Store({
      endPoint: '127.0.0.1',
      port,
      useSSL: false,
      accessKey: 'fake',
      secretKey: 'fake-secret',
      bucket: 'bucket',
      region: 'us-east-1',
      attempts: 4,
      retryBaseDelayMs: 1,
      ...options,
    });
    return {
      store: s3,
      attempts: () => attempts,
      close: () => {
        fake.closeAllConnections();
        return new Promise((resolve) => fake.close(() => resolve()));
      },
    };
  }

  it('retries 5xx answers and dropped connections, then succeeds', async () => {
    const fake = await fakeS3((attempt, request, response) => {
      if (attempt === 1) {
        response.statusCode = 503;
        response.end();
      } else if (attempt === 2) {
        request.socket.destroy();
      } else {
        response.setHeader('content-length', '3');
        response.setHeader('x-amz-meta-owner', 'me');
        response.end();
      }
    });
    try {
      expect(await fake.store.stat('k')).toEqual({ size: 3, metadata: { owner: 'me' } });
      expect(fake.attempts()).toBe(3);
    } finally {
      await fake.close();
    }
  });

  it('never retries a 4xx answer', async () => {
    const fake = await fakeS3((_attempt, _request, response) => {
      response.statusCode = 403;
      response.end();
    });
    try {
      const failure = await fake.store.stat('k').catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(S3StoreError);
      expect((failure as S3StoreError).code).toBe('AccessDenied');
      expect(fake.attempts()).toBe(1);
    } finally {
      await fake.close();
    }
  });

  it('gives up after the configured attempts and names the failure', async () => {
    const fake = await fakeS3((_attempt, _request, response) => {
      response.statusCode = 500;
      response.end();
    });
    try {
      await expect(fake.store.stat('cells/k')).rejects.toThrow(/^S3 stat of s3:\/\/bucket\/cells\/k failed: HTTP 500$/);
      expect(fake.attempts()).toBe(4);
    } finally {
      await fake.close();
    }
  });
  it('aborts a multipart upload when a part fails, and completes nothing', async () => {
    const seen: string[] = [];
    const fake = await fakeS3(
      (_attempt, request, response) => {
        const url = new URL(request.url ?? '/', 'http://fake');
        seen.push(`${request.method} ${url.search}`);
        request.resume();
        request.on('end', () => {
          if (request.method === 'POST' && url.searchParams.has('uploads')) {
            response.end(
              '<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult>' +
                '<Bucket>bucket</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>',
            );
          } else if (request.method === 'PUT' && url.searchParams.get('partNumber') === '2') {
            response.statusCode = 400;
            response.end(
              '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidPart</Code><Message>no</Message></Error>',
            );
          } else if (request.method === 'PUT') {
            response.setHeader('etag', '"0123"');
            response.end();
          } else if (request.method === 'DELETE') {
            response.statusCode = 204;
            response.end();
          } else {
            response.statusCode = 501;
            response.end();
          }
        });
      },
      { partSize: 5 * MiB },
    );
    try {
      await expect(fake.store.put('k', randomBytes(11 * MiB))).rejects.toThrow(
        /S3 put of s3:\/\/bucket\/k failed: InvalidPart/,
      );
      expect(seen.filter((line) => line.startsWith('PUT ') && line.includes('partNumber=2')).length).toBe(1);
      expect(seen).toContain('DELETE ?uploadId=up-1');
      expect(seen.some((line) => line.startsWith('POST ?uploadId'))).toBe(false);
    } finally {
      await fake.close();
    }
  });
});

describe('S3 settings from the environment', () => {
  const complete = {
    TRANSFERLAB_S3_ENDPOINT: 'http://127.0.0.1:7480',
    TRANSFERLAB_S3_ACCESS_KEY: 'ak',
    TRANSFERLAB_S3_SECRET_KEY: 'sk',
    TRANSFERLAB_S3_BUCKET: 'transferlab',
  };

  it('parses the endpoint URL, credentials, bucket, region and prefix', () => {
    expect(s3StoreOptionsFromEnv(complete)).toEqual({
      endPoint: '127.0.0.1',
      port: 7480,
      useSSL: false,
      accessKey: 'ak',
      secretKey: 'sk',
      bucket: 'transferlab',
      region: undefined,
      prefix: undefined,
    });
    const tls = s3StoreOptionsFromEnv({
      ...complete,
      TRANSFERLAB_S3_ENDPOINT: 'https://s3.example.org',
      TRANSFERLAB_S3_REGION: 'eu-west-1',
      TRANSFERLAB_S3_PREFIX: 'lab/',
    });
    expect(tls).toMatchObject({
      endPoint: 's3.example.org',
      port: 443,
      useSSL: true,
      region: 'eu-west-1',
      prefix: 'lab',
    });
    expect(s3StoreOptionsFromEnv({ ...complete, TRANSFERLAB_S3_ENDPOINT: 'http://[::1]:9000' }).endPoint).toBe('::1');
  });

  it('names the variable that is missing or wrong', () => {
    for (const name of Object.keys(complete)) {
      expect(() => s3StoreOptionsFromEnv({ ...complete, [name]: undefined })).toThrow(new RegExp(`${name} is not set`));
    }
    const wrong: [Record<string, string>, RegExp][] = [
      [{ TRANSFERLAB_S3_ENDPOINT: 'ftp://127.0.0.1:9000' }, /TRANSFERLAB_S3_ENDPOINT must use http:\/\/ or https:\/\//],
      [{ TRANSFERLAB_S3_ENDPOINT: '127.0.0.1:9000' }, /TRANSFERLAB_S3_ENDPOINT must be a URL/],
      [
        { TRANSFERLAB_S3_ENDPOINT: 'http://host:9000/bucket' },
        /TRANSFERLAB_S3_ENDPOINT must be scheme, host and port only/,
      ],
      [{ TRANSFERLAB_S3_BUCKET: 'Upper_Case' }, /TRANSFERLAB_S3_BUCKET 'Upper_Case'/],
      [{ TRANSFERLAB_S3_PREFIX: 'a/../b' }, /TRANSFERLAB_S3_PREFIX/],
    ];
    for (const [change, message] of wrong) {
      expect(() => s3StoreOptionsFromEnv({ ...complete, ...change })).toThrow(S3ConfigError);
      expect(() => s3StoreOptionsFromEnv({ ...complete, ...change })).toThrow(message);
    }
  });

  it('never puts the secret key in an error message', () => {
    const secret = 'very-secret-value';
    try {
      s3StoreOptionsFromEnv({ ...complete, TRANSFERLAB_S3_SECRET_KEY: secret, TRANSFERLAB_S3_BUCKET: 'x' });
      expect.unreachable();
    } catch (error) {
      expect(String(error)).not.toContain(secret);
    }
  });
});
