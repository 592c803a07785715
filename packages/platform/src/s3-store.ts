import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { Client, S3Error } from 'minio';
import { type ObjectStat, type ObjectStore, ObjectNotFoundError, assertSafeKey } from './object-store.ts';
import { type BackoffOptions, OUTAGE_BOUND_MS, withBackoff } from './retry.ts';
import {
  DEFAULT_PART_SIZE,
  MIN_PART_SIZE,
  type S3StoreOptions,
  s3StoreOptionsFromEnv,
  validateS3StoreOptions,
} from './s3-config.ts';

export { S3ConfigError, s3StoreOptionsFromEnv, type S3StoreOptions } from './s3-config.ts';

/**
 * The metadata entry that holds the hex sha256 of an object's bytes (header
 * `x-amz-meta-transferlab-sha256`): written on put, checked on get, hidden from stat.
 *
 * It is not `x-amz-meta-sha256`: callers keep their own `sha256` entry in user metadata (the
 * data and nn packages do), and the port's contract has user metadata round-trip unchanged,
 * including a `sha256` that is not the content's hash and its absence on a later put.
 */
export const CONTENT_SHA256_METADATA = 'transferlab-sha256';

const META_PREFIX = 'x-amz-meta-';
/** S3 allows at most 10,000 parts per upload. */
const MAX_PARTS = 10_000;
/** Parts in flight at once during a multipart upload. */
const PART_CONCURRENCY = 3;
/** The minio client's default part size. */
const CLIENT_MIN_PART_SIZE = 64 * 1024 * 1024;

/** An object's bytes do not hash to the sha256 recorded when it was put. */
export class ObjectIntegrityError extends Error {
  constructor(
    readonly key: string,
    readonly location: string,
    readonly expectedSha256: string,
    readonly actualSha256: string,
  ) {
    super(
      `object ${key} is corrupt: its bytes hash to sha256 ${actualSha256}, ` +
        `but ${expectedSha256} was recorded when it was put (${location})`,
    );
    this.name = 'ObjectIntegrityError';
  }
}

/** A failed S3 request, after any retries; `code` is S3's error code or the network error code. */
export class S3StoreError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'S3StoreError';
  }
}

const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
]);

/**
 * The HTTP status of a response the minio client refused without parsing. With its own retries
 * off, the client turns 408, 429, 499, 5xx and 520 into a plain Error whose message names the
 * status ("... Retryable HTTP status: 503"), before any S3 error body is read.
 */
function refusedStatus(error: Error): number | undefined {
  const match = /Retryable HTTP status: (\d{3})/.exec(error.message);
  return match ? Number(match[1]) : undefined;
}

function errorCode(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && code !== '') return code;
  const status = refusedStatus(error);
  return status === undefined ? undefined : `HTTP ${status}`;
}

/** Worth another attempt: a network failure or a 5xx answer. Never a 4xx: those do not heal. */
export function isTransientS3Failure(error: unknown): boolean {
  if (!(error instanceof Error) || error instanceof S3Error) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_NETWORK_CODES.has(code)) return true;
  const status = refusedStatus(error);
  return status !== undefined && status >= 500;
}

function isNotFound(error: unknown): boolean {
  const code = error instanceof S3Error ? error.code : undefined;
  return code === 'NoSuchKey' || code === 'NotFound' || code === 'NoSuchBucket';
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** User metadata from response headers: every `x-amz-meta-*` but the content hash. */
function userMetadata(headers: IncomingHttpHeaders): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const name of Object.keys(headers).sort()) {
    const lower = name.toLowerCase();
    if (!lower.startsWith(META_PREFIX)) continue;
    const key = lower.slice(META_PREFIX.length);
    if (key === CONTENT_SHA256_METADATA) continue;
    const value = headerValue(headers, name);
    if (value !== undefined) metadata[key] = value;
  }
  return metadata;
}

/**
 * The object store over the S3 API (MinIO, Ceph radosgw, AWS), through the `minio` client.
 *
 * - put is atomic: one PUT, or above `partSize` a multipart upload that S3 assembles at once
 *   on completion (a failed one is aborted). Every put records the sha256 of the bytes in
 *   `x-amz-meta-transferlab-sha256`; get checks it and throws ObjectIntegrityError on mismatch.
 * - User metadata keys are stored lower-cased as `x-amz-meta-<key>` and come back from stat.
 * - The bucket is created on first use; keys live under `prefix/` inside it when a prefix is set.
 * - Network failures and 5xx answers are retried with exponential backoff; 4xx answers never.
 */
export class S3Store implements ObjectStore {
  readonly bucket: string;
  readonly prefix: string | undefined;
  readonly partSize: number;
  private readonly client: Client;
  private readonly listPageSize: number;
  private readonly retry: Omit<BackoffOptions, 'onRetry'>;
  private bucketReady: Promise<void> | undefined;

  constructor(options: S3StoreOptions) {
    const checked = validateS3StoreOptions(options);
    this.bucket = checked.bucket;
    this.prefix = checked.prefix;
    this.partSize = checked.partSize ?? DEFAULT_PART_SIZE;
    this.listPageSize = checked.listPageSize ?? 1000;
    this.retry = {
      transient: isTransientS3Failure,
      boundMs: checked.outageBoundMs ?? OUTAGE_BOUND_MS,
      baseDelayMs: checked.retryBaseDelayMs ?? 200,
      ...(checked.attempts !== undefined ? { attempts: checked.attempts } : {}),
    };
    this.client = new Client({
      endPoint: checked.endPoint,
      port: checked.port,
      useSSL: checked.useSSL,
      accessKey: checked.accessKey,
      secretKey: checked.secretKey,
      region: checked.region,
      pathStyle: true,
      // At least our part size, so that putObject (used only up to our part size) always sends
      // a single PUT and never starts the client's own multipart upload.
      partSize: Math.max(CLIENT_MIN_PART_SIZE, this.partSize),
      // Retries happen here, per request and for network errors too; the client's own would
      // only cover some status codes and log to the console.
      retryOptions: { disableRetry: true },
    });
  }

  /** A store configured from the TRANSFERLAB_S3_* variables (see s3-config.ts). */
  static fromEnv(env: Record<string, string | undefined> = process.env): S3Store {
    return new S3Store(s3StoreOptionsFromEnv(env));
  }

  describe(key: string): string {
    return `s3://${this.bucket}/${this.objectName(key)}`;
  }

  private objectName(key: string): string {
    return this.prefix === undefined ? key : `${this.prefix}/${key}`;
  }

  private location(): string {
    return this.prefix === undefined ? `s3://${this.bucket}` : `s3://${this.bucket}/${this.prefix}/`;
  }

  async put(key: string, data: Uint8Array, options: { metadata?: Record<string, string> } = {}): Promise<void> {
    assertSafeKey(key);
    const headers = this.putHeaders(key, options.metadata ?? {});
    const bytes = asBuffer(data);
    headers[META_PREFIX + CONTENT_SHA256_METADATA] = sha256Hex(bytes);
    const name = this.objectName(key);
    await this.withBucket('put', key, async () => {
      if (bytes.length <= this.partSize) {
        // Up to the client's part size (set to at least ours) putObject sends one PUT.
        await this.retrying(() => this.client.putObject(this.bucket, name, bytes, bytes.length, { ...headers }));
      } else {
        await this.putMultipart(name, bytes, headers);
      }
    });
  }

  private putHeaders(key: string, metadata: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    for (const [rawKey, value] of Object.entries(metadata)) {
      const name = rawKey.toLowerCase();
      const problem =
        name === CONTENT_SHA256_METADATA
          ? `is reserved for the store's own content hash`
          : // No underscores: servers that map headers CGI-style (radosgw) turn them into hyphens.
            !/^[a-z0-9][a-z0-9.-]*$/.test(name)
            ? 'must be letters, digits, dots and hyphens, starting with a letter or digit'
            : headers[META_PREFIX + name] !== undefined
              ? 'appears twice when lower-cased'
              : typeof value !== 'string' || !/^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/.test(value)
                ? 'has a value S3 cannot carry: printable ASCII without leading or trailing spaces only'
                : undefined;
      if (problem) throw new Error(`metadata key '${rawKey}' for object ${key} ${problem}`);
      headers[META_PREFIX + name] = value;
    }
    // A content type given as metadata also becomes the object's Content-Type, for other S3 tools.
    const contentType = headers[`${META_PREFIX}content-type`];
    if (contentType !== undefined) headers['Content-Type'] = contentType;
    return headers;
  }

  /** Multipart upload in parts of partSize (grown if it would take more than 10,000 parts). */
  private async putMultipart(name: string, bytes: Buffer, headers: Record<string, string>): Promise<void> {
    let partSize = Math.max(this.partSize, MIN_PART_SIZE);
    while (Math.ceil(bytes.length / partSize) > MAX_PARTS) partSize *= 2;
    const partCount = Math.ceil(bytes.length / partSize);
    // A fresh upload every time: the client's putObject would resume any unfinished upload of
    // the same key, with that upload's metadata (and content hash) rather than ours.
    const uploadId = await this.retrying(() =>
      this.client.initiateNewMultipartUpload(this.bucket, name, { ...headers }),
    );
    try {
      const etags: { part: number; etag: string }[] = new Array(partCount);
      let next = 0;
      let failure: { error: unknown } | undefined;
      // Workers take parts in order; after a failure they take no more, and all have finished
      // before the upload is aborted.
      const worker = async (): Promise<void> => {
        while (next < partCount && failure === undefined) {
          const index = next++;
          const chunk = bytes.subarray(index * partSize, Math.min(bytes.length, (index + 1) * partSize));
          const md5 = createHash('md5').update(chunk).digest('base64');
          try {
            const uploaded = await this.retrying(() =>
              this.client.uploadPart(
                {
                  bucketName: this.bucket,
                  objectName: name,
                  uploadID: uploadId,
                  partNumber: index + 1,
                  headers: { 'Content-MD5': md5 },
                },
                chunk,
              ),
            );
            etags[index] = { part: index + 1, etag: uploaded.etag };
          } catch (error) {
            failure ??= { error };
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, partCount) }, worker));
      if (failure !== undefined) throw failure.error;
      await this.retrying(() => this.client.completeMultipartUpload(this.bucket, name, uploadId, etags));
    } catch (error) {
      // Best effort: leave no parts behind. The object keeps its previous version.
      await this.client.abortMultipartUpload(this.bucket, name, uploadId).catch(() => undefined);
      throw error;
    }
  }

  async get(key: string): Promise<Buffer> {
    assertSafeKey(key);
    const name = this.objectName(key);
    const { bytes, headers } = await this.withBucket('get', key, () =>
      this.retrying(async () => {
        const response = await this.client.getObject(this.bucket, name);
        const chunks: Buffer[] = [];
        for await (const chunk of response) chunks.push(chunk as Buffer);
        const received = 'headers' in response ? (response.headers as IncomingHttpHeaders) : {};
        return { bytes: Buffer.concat(chunks), headers: received };
      }),
    );
    const length = headerValue(headers, 'content-length');
    if (length !== undefined && Number(length) !== bytes.length) {
      throw new S3StoreError(
        `S3 get of ${this.describe(key)} returned ${bytes.length} bytes, but the server announced ${length}`,
        'IncompleteBody',
        { cause: undefined },
      );
    }
    const expected = headerValue(headers, META_PREFIX + CONTENT_SHA256_METADATA);
    // Objects written by other tools carry no hash: nothing to check them against.
    if (expected !== undefined) {
      const actual = sha256Hex(bytes);
      if (actual !== expected.toLowerCase()) throw new ObjectIntegrityError(key, this.describe(key), expected, actual);
    }
    return bytes;
  }

  async stat(key: string): Promise<ObjectStat | undefined> {
    assertSafeKey(key);
    const name = this.objectName(key);
    try {
      const response = await this.withBucket('stat', key, () =>
        this.retrying(() =>
          this.client.makeRequestAsyncOmit({ method: 'HEAD', bucketName: this.bucket, objectName: name }),
        ),
      );
      return {
        size: Number(headerValue(response.headers, 'content-length') ?? 0),
        metadata: userMetadata(response.headers),
      };
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const own = this.prefix === undefined ? '' : `${this.prefix}/`;
    const keys: string[] = [];
    try {
      await this.withBucket('list', prefix, async () => {
        let token = '';
        for (;;) {
          const page = await this.retrying(() =>
            this.client.listObjectsV2Query(this.bucket, own + prefix, token, '', this.listPageSize, ''),
          );
          for (const item of page.objects) {
            if (item.name !== undefined && item.name.startsWith(own)) keys.push(item.name.slice(own.length));
          }
          const truncated = String(page.isTruncated) === 'true';
          if (!truncated) break;
          if (!page.nextContinuationToken || page.nextContinuationToken === token) {
            throw new Error(`S3 list of ${this.location()}${prefix} was truncated without a continuation token`);
          }
          token = page.nextContinuationToken;
        }
      });
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return [];
      throw error;
    }
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    assertSafeKey(key);
    const name = this.objectName(key);
    try {
      // S3 answers 204 for a key that is not there.
      await this.withBucket('delete', key, () => this.retrying(() => this.client.removeObject(this.bucket, name)));
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return;
      throw error;
    }
  }

  /**
   * Runs an operation once the bucket exists, and turns failures into this store's errors:
   * absent objects (or bucket) into ObjectNotFoundError, the rest into S3StoreError naming the
   * operation, the object and the S3 or network error code. A bucket deleted behind the store's
   * back is created again, once.
   */
  private async withBucket<T>(operation: string, key: string, run: () => Promise<T>): Promise<T> {
    for (let round = 1; ; round++) {
      try {
        await this.ensureBucket();
        return await run();
      } catch (error) {
        if (error instanceof S3Error && error.code === 'NoSuchBucket' && operation === 'put' && round === 1) {
          this.bucketReady = undefined;
          continue;
        }
        if (isNotFound(error)) throw new ObjectNotFoundError(key, this.location());
        if (
          error instanceof ObjectNotFoundError ||
          error instanceof ObjectIntegrityError ||
          error instanceof S3StoreError
        ) {
          throw error;
        }
        const code = errorCode(error);
        // A refused status says all there is in its code ("HTTP 503").
        const detail = code?.startsWith('HTTP ') ? '' : error instanceof Error ? error.message : String(error);
        const where = operation === 'list' ? `${this.location()}${key}` : this.describe(key);
        throw new S3StoreError(
          `S3 ${operation} of ${where} failed: ${code ?? 'error'}${detail && detail !== code ? `: ${detail}` : ''}`,
          code,
          { cause: error },
        );
      }
    }
  }

  private ensureBucket(): Promise<void> {
    this.bucketReady ??= this.createBucketIfMissing().catch((error: unknown) => {
      this.bucketReady = undefined;
      throw error;
    });
    return this.bucketReady;
  }

  private async createBucketIfMissing(): Promise<void> {
    if (await this.retrying(() => this.client.bucketExists(this.bucket))) return;
    try {
      await this.retrying(() => this.client.makeBucket(this.bucket));
    } catch (error) {
      // Another store (or process) created it first: just as good.
      if (error instanceof S3Error && error.code === 'BucketAlreadyOwnedByYou') return;
      throw error;
    }
  }

  /** Runs one request, again after a growing delay while it fails transiently, within the outage bound. */
  private retrying<T>(request: () => Promise<T>): Promise<T> {
    return withBackoff(request, this.retry);
  }
}
