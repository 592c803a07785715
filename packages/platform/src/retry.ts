import pRetry from 'p-retry';

/**
 * How long a call to NATS or S3 keeps retrying through an outage by default: long enough for a
 * server restart or a rolling upgrade (tens of seconds), short enough that a server that is gone
 * for good ends the work with an error naming it.
 */
export const OUTAGE_BOUND_MS = 120_000;

export interface BackoffOptions {
  /** Whether a failure may pass on its own (a timeout, a refused connection); others end at once. */
  transient: (error: unknown) => boolean;
  /** No retry starts once this long has passed since the first attempt. Default OUTAGE_BOUND_MS. */
  boundMs?: number;
  /** At most this many attempts, within the bound. Default: as many as the bound allows. */
  attempts?: number;
  /** The first delay; it doubles per attempt up to maxDelayMs, times a random 1..2. Default 200 ms. */
  baseDelayMs?: number;
  /** Default 5 s. */
  maxDelayMs?: number;
  signal?: AbortSignal;
  /** Told of each transient failure before its retry (attempt counts from 1). */
  onRetry?: (error: unknown, attempt: number) => void;
}

/**
 * The one retry helper of the platform (p-retry underneath): `call` again after a growing,
 * jittered delay while it fails transiently, within a time bound. Past the bound, or on a
 * failure that is not transient, the last error is thrown as it came, so callers keep
 * matching on its type and code (onRetry counts the attempts for their messages).
 */
export async function withBackoff<T>(call: () => Promise<T>, options: BackoffOptions): Promise<T> {
  return pRetry(call, {
    retries: options.attempts === undefined ? Number.POSITIVE_INFINITY : Math.max(0, options.attempts - 1),
    factor: 2,
    minTimeout: options.baseDelayMs ?? 200,
    maxTimeout: options.maxDelayMs ?? 5_000,
    randomize: true,
    maxRetryTime: options.boundMs ?? OUTAGE_BOUND_MS,
    ...(options.signal ? { signal: options.signal } : {}),
    // Retry timers never hold a process that is otherwise done.
    unref: true,
    shouldRetry: ({ error }) => options.transient(error),
    onFailedAttempt: ({ error, attemptNumber }) => {
      if (options.transient(error)) options.onRetry?.(error, attemptNumber);
    },
  });
}
