/**
 * The bus port: durable event streams and key-value buckets.
 *
 * Two adapters implement it: NATS JetStream (`nats-bus.ts`, the cluster) and an in-memory bus
 * (`in-process-bus.ts`, one machine). `bus.contract.ts` holds the behaviour both must have.
 * Subject, stream and bucket names are listed in `subjects.ts`.
 *
 * Delivery is at least once everywhere: a handler that resolves acknowledges its message, a
 * handler that throws (or rejects) asks for a redelivery, up to `maxDeliver` deliveries in all.
 * Handlers therefore must be idempotent. Each subscription handles one message at a time, in
 * delivery order.
 */

/** What `publish` accepts: bytes are sent as they are, anything else as JSON. */
export type Payload = Uint8Array | unknown;

export interface PublishOptions {
  /**
   * Message headers, e.g. the W3C `traceparent`. Names are case-sensitive ASCII tokens; names
   * starting with `Nats-` are reserved for the transport and never delivered.
   */
  headers?: Record<string, string>;
  /**
   * Dedupe id: a second publish with the same id within the dedupe window (two minutes by
   * default) is dropped and acknowledged as a duplicate, so retried publishes are idempotent.
   */
  msgId?: string;
}

export interface PublishAck {
  /** The message's sequence in its stream (for a duplicate: the first copy's). */
  seq: number;
  /** True when msgId was seen within the dedupe window and nothing new was stored. */
  duplicate: boolean;
}

export interface BusMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Parses `data` as UTF-8 JSON; throws an error naming the subject when it is not JSON. */
  json<T = unknown>(): T;
  readonly headers: Readonly<Record<string, string>>;
  /** The message's sequence number in its stream: increases with publish order. */
  readonly seq: number;
  /** 1 on the first delivery, 2 on the first redelivery, and so on. */
  readonly deliveryCount: number;
  /** deliveryCount > 1. */
  readonly redelivered: boolean;
}

export type MessageHandler = (msg: BusMessage) => Promise<void> | void;

export interface RetryOptions {
  /** Deliveries in all (the first included) before a failing message is given up. Default 5. */
  maxDeliver?: number;
  /** Wait before redelivering a message whose handler threw. Default 1000 ms. */
  retryDelayMs?: number;
}

export interface SubscribeOptions extends RetryOptions {
  /**
   * A durable subscription has a name and remembers, across re-subscriptions and restarts
   * (on NATS: on the server), which messages were acknowledged: it resumes after the last
   * acknowledged one. Several subscriptions with the same durable name share its messages.
   * Names: [A-Za-z0-9_-]+. The subject filter of a durable cannot change.
   */
  durable?: string;
  /**
   * Where a new subscription starts: 'new' (default) = messages published after it starts,
   * 'all' = every message still in the stream. A durable uses it only when first created.
   */
  deliver?: 'all' | 'new';
}

export interface Subscription {
  /**
   * Stops delivery and waits for the handler in flight. Messages received but not yet handled
   * are handed back for redelivery (to another subscription of the durable, or later).
   */
  unsubscribe(): Promise<void>;
}

export interface KvValue<T = Uint8Array> {
  value: T;
  /** Increases with every write to the bucket; the compare-and-set token of `update`. */
  revision: number;
}

export interface KvEntry {
  key: string;
  /** Empty for a delete. */
  value: Uint8Array;
  revision: number;
  operation: 'put' | 'delete';
  json<T = unknown>(): T;
}

export interface KvWatchOptions {
  /** Only keys starting with this string (e.g. `cell.<sweepId>.`). Default: every key. */
  prefix?: string;
  /**
   * By default the handler first gets the latest entry of every matching key (a delete when the
   * key was deleted), then each later change. With includeHistory it first gets every entry the
   * bucket still holds; with updatesOnly only later changes.
   */
  includeHistory?: boolean;
  updatesOnly?: boolean;
}

export type KvWatchHandler = (entry: KvEntry) => Promise<void> | void;

export interface KvOptions {
  /** Entries kept per key, the latest included (1..64). Default 1. */
  history?: number;
}

/**
 * A key-value bucket with revisions. Keys: [-/_=.a-zA-Z0-9]+, not starting or ending with '.'
 * and without empty '.'-separated parts.
 */
export interface KeyValueStore {
  readonly bucket: string;
  /** The latest value, or undefined when the key was never written or was deleted. */
  get(key: string): Promise<KvValue | undefined>;
  getJson<T = unknown>(key: string): Promise<KvValue<T> | undefined>;
  /** Writes unconditionally; returns the new revision. */
  put(key: string, value: Uint8Array): Promise<number>;
  putJson(key: string, value: unknown): Promise<number>;
  /**
   * Compare-and-set: writes only when the key's latest revision is `expectedRevision`, else
   * throws RevisionMismatchError. Returns the new revision.
   */
  update(key: string, value: Uint8Array, expectedRevision: number): Promise<number>;
  updateJson(key: string, value: unknown, expectedRevision: number): Promise<number>;
  /** Writes only when the key is absent (never written, or deleted), else throws RevisionMismatchError. */
  create(key: string, value: Uint8Array): Promise<number>;
  createJson(key: string, value: unknown): Promise<number>;
  /** Deletes the key (its history keeps a delete entry); a missing key is no error. */
  delete(key: string): Promise<void>;
  /** The keys that hold a value, starting with prefix (default: all), sorted. */
  keys(prefix?: string): Promise<string[]>;
  /** The entries the bucket still holds for a key, oldest first; deletes included. */
  history(key: string): Promise<KvEntry[]>;
  /**
   * Calls the handler for each matching entry, one at a time and in revision order. Resolves
   * once the handler has seen the initial entries (see KvWatchOptions), so the caller knows
   * the state as of the call. A throwing handler is logged and the watch goes on.
   */
  watch(options: KvWatchOptions, handler: KvWatchHandler): Promise<Subscription>;
}

export interface Bus {
  /** Stores a message in the stream that captures the subject; fails when no stream does. */
  publish(subject: string, data: Payload, options?: PublishOptions): Promise<PublishAck>;
  /** Delivers messages of the events stream matching a filter (`*` = one token, `>` = the rest). */
  subscribe(subjectFilter: string, handler: MessageHandler, options?: SubscribeOptions): Promise<Subscription>;
  /** The named bucket, created when missing. Names: [-_a-zA-Z0-9]+. */
  kv(bucket: string, options?: KvOptions): Promise<KeyValueStore>;
  /** Stops every subscription and watch (waiting for handlers in flight), then disconnects. */
  close(): Promise<void>;
}

/** Where adapters report what they cannot throw to a caller (a handler given up, a lost connection). */
export interface BusLogger {
  warn(fields: Record<string, unknown>, message: string): void;
}

export class RevisionMismatchError extends Error {
  constructor(
    readonly bucket: string,
    readonly key: string,
    /** 0 for `create`: the key was expected absent. */
    readonly expectedRevision: number,
    /** The key's latest revision when known (the server reports it), else undefined. */
    readonly actualRevision: number | undefined,
  ) {
    const actual = actualRevision === undefined ? 'another revision' : `revision ${actualRevision}`;
    super(
      expectedRevision === 0
        ? `kv ${bucket}: cannot create key '${key}': it already exists (at ${actual})`
        : `kv ${bucket}: cannot update key '${key}': expected revision ${expectedRevision}, found ${actual}`,
    );
    this.name = 'RevisionMismatchError';
  }
}

export class BusClosedError extends Error {
  constructor(what: string) {
    super(`bus is closed: cannot ${what}`);
    this.name = 'BusClosedError';
  }
}

export const DEFAULT_MAX_DELIVER = 5;
export const DEFAULT_RETRY_DELAY_MS = 1000;
export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_DUPLICATE_WINDOW_MS = 2 * 60_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes as they are (copied, so later changes by the caller do not leak in), anything else as JSON. */
export function encodePayload(data: Payload, where: string): Uint8Array {
  if (data instanceof Uint8Array) return new Uint8Array(data);
  let text: string | undefined;
  try {
    text = JSON.stringify(data);
  } catch (error) {
    throw new Error(`${where}: payload is not JSON-serialisable: ${(error as Error).message}`, { cause: error });
  }
  if (text === undefined) throw new Error(`${where}: payload is not JSON-serialisable (${typeof data})`);
  return encoder.encode(text);
}

/**
 * A message no delivery can ever handle (not JSON, or JSON of the wrong shape): a handler throws
 * it, or `json()` does, and the bus sets the message aside at once (NATS: term) with one
 * warning naming the subject and sequence, instead of redelivering it maxDeliver times. Its
 * message must never quote the payload.
 */
export class PoisonMessageError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PoisonMessageError';
  }
}

export function isPoisonMessage(error: unknown): boolean {
  return (
    error instanceof PoisonMessageError || (error as { name?: unknown } | undefined)?.name === 'PoisonMessageError'
  );
}

export function decodeJson<T>(data: Uint8Array, where: string): T {
  try {
    return JSON.parse(decoder.decode(data)) as T;
  } catch (error) {
    // The parser's own message quotes the text it choked on: only its kind is kept.
    const kind = (error as Error).name;
    throw new PoisonMessageError(`${where}: payload of ${data.length} bytes is not JSON (${kind})`);
  }
}

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Checks header names and values before they reach a transport: no CR/LF injection, no reserved names. */
export function assertHeaders(headers: Record<string, string> | undefined, where: string): void {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (!HEADER_NAME.test(name)) throw new Error(`${where}: invalid header name '${name}'`);
    if (/^nats-/i.test(name)) throw new Error(`${where}: header '${name}' is reserved for the transport`);
    if (typeof value !== 'string' || /[\r\n]/.test(value)) {
      throw new Error(`${where}: header '${name}' must be a string without line breaks`);
    }
  }
}

export function positiveInteger(value: number | undefined, fallback: number, what: string): number {
  const result = value ?? fallback;
  if (!Number.isInteger(result) || result < 1) throw new Error(`${what} must be a positive integer, got ${value}`);
  return result;
}

export function nonNegativeNumber(value: number | undefined, fallback: number, what: string): number {
  const result = value ?? fallback;
  if (!Number.isFinite(result) || result < 0) throw new Error(`${what} must be a number >= 0, got ${value}`);
  return result;
}

/** A bucket's history setting: entries kept per key, NATS allows 1..64. */
export function checkHistory(history: number | undefined): number | undefined {
  if (history === undefined) return undefined;
  if (!Number.isInteger(history) || history < 1 || history > 64) {
    throw new Error(`kv history must be an integer in 1..64, got ${history}`);
  }
  return history;
}
