/**
 * Settings of the S3 object store, and their parsing from the environment:
 *
 * | variable                     | meaning                                              |
 * |------------------------------|------------------------------------------------------|
 * | `TRANSFERLAB_S3_ENDPOINT`    | `http://host:port` or `https://host[:port]` (required) |
 * | `TRANSFERLAB_S3_ACCESS_KEY`  | access key (required)                                |
 * | `TRANSFERLAB_S3_SECRET_KEY`  | secret key (required)                                |
 * | `TRANSFERLAB_S3_BUCKET`      | bucket, created on first use (required)              |
 * | `TRANSFERLAB_S3_REGION`      | region (optional; asked of the server when absent)   |
 * | `TRANSFERLAB_S3_PREFIX`      | key prefix inside the bucket (optional)              |
 */
import { isIPv6 } from 'node:net';
import { assertSafeKey } from './object-store.ts';

export interface S3StoreOptions {
  /** Host name or IP address, without scheme or port. */
  endPoint: string;
  port: number;
  useSSL: boolean;
  accessKey: string;
  secretKey: string;
  bucket: string;
  region?: string;
  /** Keys live under `<prefix>/` inside the bucket; list() and the other calls hide it. */
  prefix?: string;
  /** Objects larger than this go up in parts of this size (S3's minimum, 5 MiB, and up). Default 16 MiB. */
  partSize?: number;
  /** Keys asked for per list request (1..1000). Default 1000, S3's maximum. */
  listPageSize?: number;
  /** Attempts per request on transient failures (network errors, HTTP 5xx); 1 disables retries. Default: as many as outageBoundMs allows. */
  attempts?: number;
  /** First retry delay; doubles per attempt, with jitter, capped at 5 s. Default 200 ms. */
  retryBaseDelayMs?: number;
  /** How long a request keeps retrying through an outage of the S3 server. Default 120 s (OUTAGE_BOUND_MS). */
  outageBoundMs?: number;
}

export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
export const DEFAULT_PART_SIZE = 16 * 1024 * 1024;

/** Thrown for settings that cannot work; names the variable or option at fault. */
export class S3ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'S3ConfigError';
  }
}

/** S3 bucket naming rules (3-63 lower-case letters, digits, dots and hyphens; not an IP address). */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 63) return 'must be 3 to 63 characters long';
  if (!/^[a-z0-9][a-z0-9.-]*[a-z0-9]$/.test(name)) {
    return 'may hold only lower-case letters, digits, dots and hyphens, and must start and end with a letter or digit';
  }
  if (name.includes('..') || name.includes('.-') || name.includes('-.'))
    return 'has adjacent dots or a dot next to a hyphen';
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return 'must not look like an IP address';
  return undefined;
}

/** Checks options built in code; returns them with the prefix normalised (no leading or trailing '/'). */
export function validateS3StoreOptions(options: S3StoreOptions): S3StoreOptions {
  const problem = (what: string, message: string): never => {
    throw new S3ConfigError(`S3 store option ${what} ${message}`);
  };
  if (
    !options.endPoint ||
    /[/\s]/.test(options.endPoint) ||
    (options.endPoint.includes(':') && !isIPv6(options.endPoint))
  ) {
    problem('endPoint', `must be a host name or address without scheme, port or path, got '${options.endPoint}'`);
  }
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
    problem('port', `must be an integer in 1..65535, got ${options.port}`);
  }
  if (!options.accessKey) problem('accessKey', 'is empty');
  if (!options.secretKey) problem('secretKey', 'is empty');
  const bucketProblem = bucketNameProblem(options.bucket);
  if (bucketProblem) problem('bucket', `'${options.bucket}' ${bucketProblem}`);
  let prefix = options.prefix?.replace(/^\/+|\/+$/g, '');
  if (prefix === '') prefix = undefined;
  if (prefix !== undefined) {
    try {
      assertSafeKey(prefix);
    } catch {
      problem('prefix', `'${options.prefix}' must be a relative '/'-separated path without '..' or empty parts`);
    }
  }
  if (
    options.partSize !== undefined &&
    (!Number.isInteger(options.partSize) || options.partSize < MIN_PART_SIZE || options.partSize > MAX_PART_SIZE)
  ) {
    problem(
      'partSize',
      `must be an integer from 5 MiB to 5 GiB (${MIN_PART_SIZE}..${MAX_PART_SIZE}), got ${options.partSize}`,
    );
  }
  if (
    options.listPageSize !== undefined &&
    (!Number.isInteger(options.listPageSize) || options.listPageSize < 1 || options.listPageSize > 1000)
  ) {
    problem('listPageSize', `must be an integer in 1..1000, got ${options.listPageSize}`);
  }
  if (options.attempts !== undefined && (!Number.isInteger(options.attempts) || options.attempts < 1)) {
    problem('attempts', `must be an integer of at least 1, got ${options.attempts}`);
  }
  if (options.outageBoundMs !== undefined && !(Number.isFinite(options.outageBoundMs) && options.outageBoundMs >= 0)) {
    problem('outageBoundMs', `must be a number of milliseconds, 0 or more, got ${options.outageBoundMs}`);
  }
  return { ...options, prefix };
}

type Env = Record<string, string | undefined>;

/** Reads the store's settings from TRANSFERLAB_S3_* variables; the error names the variable at fault. */
export function s3StoreOptionsFromEnv(env: Env = process.env): S3StoreOptions {
  const required = (name: string): string => {
    const value = env[name]?.trim();
    if (!value) throw new S3ConfigError(`${name} is not set (see packages/platform/src/s3-config.ts)`);
    return value;
  };
  const endpointText = required('TRANSFERLAB_S3_ENDPOINT');
  let url: URL;
  try {
    url = new URL(endpointText);
  } catch {
    throw new S3ConfigError(`TRANSFERLAB_S3_ENDPOINT must be a URL like http://127.0.0.1:9000, got '${endpointText}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new S3ConfigError(`TRANSFERLAB_S3_ENDPOINT must use http:// or https://, got '${endpointText}'`);
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) {
    throw new S3ConfigError(
      `TRANSFERLAB_S3_ENDPOINT must be scheme, host and port only (put the bucket in TRANSFERLAB_S3_BUCKET ` +
        `and credentials in TRANSFERLAB_S3_ACCESS_KEY/SECRET_KEY), got '${url.protocol}//${url.host}${url.pathname}'`,
    );
  }
  const useSSL = url.protocol === 'https:';
  const bucket = required('TRANSFERLAB_S3_BUCKET');
  const bucketProblem = bucketNameProblem(bucket);
  if (bucketProblem) throw new S3ConfigError(`TRANSFERLAB_S3_BUCKET '${bucket}' ${bucketProblem}`);
  const prefix = env.TRANSFERLAB_S3_PREFIX?.trim() || undefined;
  if (prefix !== undefined) {
    try {
      assertSafeKey(prefix.replace(/^\/+|\/+$/g, ''));
    } catch {
      throw new S3ConfigError(
        `TRANSFERLAB_S3_PREFIX must be a relative '/'-separated path without '..' or empty parts, got '${prefix}'`,
      );
    }
  }
  const options: S3StoreOptions = {
    // URL keeps IPv6 hosts in brackets; the client wants the bare address.
    endPoint: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port ? Number(url.port) : useSSL ? 443 : 80,
    useSSL,
    accessKey: required('TRANSFERLAB_S3_ACCESS_KEY'),
    secretKey: required('TRANSFERLAB_S3_SECRET_KEY'),
    bucket,
    region: env.TRANSFERLAB_S3_REGION?.trim() || undefined,
    prefix,
  };
  return validateS3StoreOptions(options);
}
