import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type KV,
  type KvEntry as NatsKvEntry,
  KvWatchInclude,
  type MsgHdrs,
  type NatsConnection,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  connect,
  headers as natsHeaders,
  nanos,
  nuid,
} from 'nats';
import {
  type Bus,
  type BusLogger,
  type BusMessage,
  type KeyValueStore,
  type KvEntry,
  type KvOptions,
  type KvValue,
  type KvWatchHandler,
  type KvWatchOptions,
  type MessageHandler,
  type Payload,
  type PublishAck,
  type PublishOptions,
  type SubscribeOptions,
  type Subscription,
  BusClosedError,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_DUPLICATE_WINDOW_MS,
  DEFAULT_MAX_DELIVER,
  DEFAULT_RETRY_DELAY_MS,
  RevisionMismatchError,
  assertHeaders,
  checkHistory,
  decodeJson,
  encodePayload,
  isPoisonMessage,
  nonNegativeNumber,
  positiveInteger,
} from './bus.ts';
import {
  EVENTS_STREAM,
  EVENTS_SUBJECTS,
  assertBucketName,
  assertConsumerName,
  assertKvKey,
  assertKvPrefix,
  assertSubject,
  assertSubjectFilter,
  filterContains,
  kvPrefixFilter,
} from './subjects.ts';
import { runInMessageContext, withTraceHeaders } from './telemetry-context.ts';
import { OUTAGE_BOUND_MS, withBackoff } from './retry.ts';

/**
 * The bus over NATS JetStream (server 2.9+, the `nats` 2.x client). On connect it creates or
 * updates the events stream; KV buckets are created on first use.
 * Consumers are pull consumers with explicit acks; durable ones live on the server, so a
 * restarted process resumes where its predecessor stopped. Every error names the subject,
 * stream or bucket it concerns.
 */
export interface NatsBusOptions {
  /** e.g. `nats://127.0.0.1:4222`; several for a cluster. */
  servers: string | string[];
  /** The connection's name as the server reports it, e.g. the service name. */
  name: string;
  /** The login, when the server asks for one (the Helm chart's bundled NATS does). */
  user?: string;
  pass?: string;
  streams?: {
    /** The events stream. Defaults: 7 days max age, no size limit, file storage, 1 replica. */
    events?: StreamLimits;
  };
  /** Keep trying the first connection until the server is up (default: fail at once). */
  waitOnFirstConnect?: boolean;
  /** Wait between reconnect attempts, plus a random jitter up to reconnectJitterMs. Defaults 2000 and 1000. */
  reconnectTimeWaitMs?: number;
  reconnectJitterMs?: number;
  /** How long a JetStream request (publish ack, KV read, consumer setup) may take. Default 5000 ms. */
  requestTimeoutMs?: number;
  /**
   * How long a publish or a KV call keeps retrying while NATS does not answer (a restart, a
   * dropped connection), with growing delays. A publish's retries carry the same dedupe id, so a
   * message is stored at most once. Default 120 s (OUTAGE_BOUND_MS).
   */
  outageBoundMs?: number;
  logger?: BusLogger;
}

export interface StreamLimits {
  maxAgeMs?: number;
  maxBytes?: number;
  replicas?: number;
  storage?: 'file' | 'memory';
  /** The msgId dedupe window; at most maxAgeMs. Default 2 minutes. */
  duplicateWindowMs?: number;
}

const DEFAULT_MAX_AGE_MS = 7 * 24 * 3600_000;
/** An ephemeral consumer whose client vanished without deleting it is removed after this. */
const EPHEMERAL_INACTIVE_MS = 60_000;
/**
 * Messages a subscription pulls at once. Pulled messages wait unacknowledged in the client, and
 * only the one being handled reports progress, so a small batch keeps slow handlers within ack
 * wait.
 */
const SUBSCRIPTION_BATCH = 10;

export async function connectNatsBus(options: NatsBusOptions): Promise<Bus> {
  const servers = Array.isArray(options.servers) ? options.servers : [options.servers];
  // A URL may carry a login (nats://user:password@host): messages name the server without it.
  const shown = servers.map((server) => server.replace(/\/\/[^/@]*@/, '//')).join(', ');
  const timeout = positiveInteger(options.requestTimeoutMs, 5000, 'requestTimeoutMs');
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      name: options.name,
      ...(options.user !== undefined ? { user: options.user, pass: options.pass } : {}),
      timeout,
      // Never give up: a service outlives a NATS restart or a rolling upgrade.
      maxReconnectAttempts: -1,
      reconnectTimeWait: nonNegativeNumber(options.reconnectTimeWaitMs, 2000, 'reconnectTimeWaitMs'),
      reconnectJitter: nonNegativeNumber(options.reconnectJitterMs, 1000, 'reconnectJitterMs'),
      waitOnFirstConnect: options.waitOnFirstConnect ?? false,
      // The client otherwise builds two Errors (stack traces) per request in case one times out:
      // 15% of a controller's CPU at 10,000 cells (bench/controller-scale.ts). Our errors name the
      // operation and key themselves (call()), so the trace adds nothing.
      noAsyncTraces: true,
    });
  } catch (error) {
    throw wrap(`cannot connect to NATS at ${shown}`, error);
  }
  try {
    const jsm = await nc.jetstreamManager({ timeout }).catch((error: unknown) => {
      throw wrap(`JetStream is not available at ${shown} (is the server started with -js?)`, error);
    });
    const bus = new NatsBus(nc, jsm, nc.jetstream({ timeout }), options);
    await bus.ensureStream(
      streamConfig(EVENTS_STREAM, [EVENTS_SUBJECTS], RetentionPolicy.Limits, options.streams?.events ?? {}),
    );
    bus.watchStatus();
    return bus;
  } catch (error) {
    await nc.close().catch(() => undefined);
    throw error;
  }
}

function streamConfig(
  name: string,
  subjects: string[],
  retention: RetentionPolicy,
  limits: StreamLimits,
): Partial<StreamConfig> & { name: string } {
  const maxAgeMs = positiveInteger(limits.maxAgeMs, DEFAULT_MAX_AGE_MS, `stream ${name}: maxAgeMs`);
  const duplicateWindowMs = Math.min(
    maxAgeMs,
    positiveInteger(limits.duplicateWindowMs, DEFAULT_DUPLICATE_WINDOW_MS, `stream ${name}: duplicateWindowMs`),
  );
  return {
    name,
    subjects,
    retention,
    storage: limits.storage === 'memory' ? StorageType.Memory : StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(maxAgeMs),
    max_bytes: limits.maxBytes ?? -1,
    duplicate_window: nanos(duplicateWindowMs),
    num_replicas: limits.replicas ?? 1,
  };
}

class NatsBus implements Bus {
  private readonly logger: BusLogger | undefined;
  private readonly outageBoundMs: number;
  private readonly subscriptions = new Set<Subscription>();
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    options: NatsBusOptions,
  ) {
    this.logger = options.logger;
    this.outageBoundMs = nonNegativeNumber(options.outageBoundMs, OUTAGE_BOUND_MS, 'outageBoundMs');
  }

  /**
   * `call` again while NATS does not answer, within the outage bound (closing the bus ends it at
   * once); the error past the bound names the call and how long it was tried.
   */
  async throughOutage<T>(where: string, call: () => Promise<T>): Promise<T> {
    const started = Date.now();
    let attempts = 1;
    try {
      return await withBackoff(call, {
        transient: (error) => !this.closed && TRANSIENT_NATS_CODES.has(errorCode(error) ?? ''),
        boundMs: this.outageBoundMs,
        onRetry: (error, attempt) => {
          attempts = attempt + 1;
          if (attempt === 1) this.logger?.warn({ where, err: error }, 'NATS did not answer: retrying');
        },
      });
    } catch (error) {
      const tried = ((Date.now() - started) / 1000).toFixed(1);
      throw wrap(attempts > 1 ? `${where} (${attempts} attempts over ${tried} s)` : where, error);
    }
  }

  /** Logs disconnects and reconnects; the client reconnects by itself. */
  watchStatus(): void {
    void (async () => {
      for await (const status of this.nc.status()) {
        if (status.type === 'disconnect' || status.type === 'reconnect' || status.type === 'error') {
          this.logger?.warn({ nats: status.type, data: String(status.data) }, `NATS connection: ${status.type}`);
        }
      }
    })().catch(() => undefined);
  }

  assertOpen(what: string): void {
    if (this.closed || this.nc.isClosed()) throw new BusClosedError(what);
  }

  /** Creates the stream, or brings an existing one to this configuration. */
  async ensureStream(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    try {
      try {
        await this.jsm.streams.info(config.name);
      } catch (error) {
        if (!isNotFound(error)) throw error;
        await this.jsm.streams.add(config);
        return;
      }
      const { name: _name, ...changes } = config;
      await this.jsm.streams.update(config.name, changes);
    } catch (error) {
      throw wrap(`cannot create or update stream ${config.name} (${config.subjects?.join(', ')})`, error);
    }
  }

  /** Creates a durable consumer, or updates its ack wait and max deliver; its filter cannot change. */
  private async ensureDurable(
    stream: string,
    config: Partial<ConsumerConfig> & { durable_name: string },
  ): Promise<void> {
    const name = config.durable_name;
    const where = `durable consumer ${name} on stream ${stream}`;
    try {
      for (let attempt = 0; ; attempt++) {
        let existing: ConsumerConfig;
        try {
          existing = (await this.jsm.consumers.info(stream, name)).config;
        } catch (error) {
          if (!isNotFound(error)) throw error;
          try {
            await this.jsm.consumers.add(stream, config);
            return;
          } catch (addError) {
            // Another process created it meanwhile, with other settings: look again.
            if (attempt < 2 && isAlreadyExists(addError)) continue;
            throw addError;
          }
        }
        if ((existing.filter_subject ?? '') !== (config.filter_subject ?? '')) {
          throw new Error(
            `it exists with filter '${existing.filter_subject ?? ''}', not '${config.filter_subject ?? ''}'`,
          );
        }
        if (existing.ack_wait !== config.ack_wait || existing.max_deliver !== config.max_deliver) {
          await this.jsm.consumers.update(stream, name, { ack_wait: config.ack_wait, max_deliver: config.max_deliver });
        }
        return;
      }
    } catch (error) {
      throw wrap(where, error);
    }
  }

  async publish(subject: string, data: Payload, options: PublishOptions = {}): Promise<PublishAck> {
    const where = `publish to ${subject}`;
    this.assertOpen(where);
    assertSubject(subject);
    assertHeaders(options.headers, where);
    const bytes = encodePayload(data, where);
    // A dedupe id even when the caller gave none: a retry after a lost ack stores nothing twice.
    const msgID = options.msgId ?? nuid.next();
    // The active trace context rides along as `traceparent` unless the caller set one.
    const headers = toNatsHeaders(withTraceHeaders(options.headers));
    try {
      const ack = await this.throughOutage(where, () => this.js.publish(subject, bytes, { msgID, headers }));
      return { seq: ack.seq, duplicate: options.msgId === undefined ? false : ack.duplicate };
    } catch (error) {
      const cause = (error as Error).cause;
      if (errorCode(cause) === '503') throw wrap(`${where}: no stream captures this subject`, cause);
      throw error;
    }
  }

  async subscribe(filter: string, handler: MessageHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const where = `subscribe to ${filter}`;
    this.assertOpen(where);
    assertSubjectFilter(filter);
    if (!filterContains(EVENTS_SUBJECTS, filter)) {
      throw new Error(`${where}: outside stream ${EVENTS_STREAM} (${EVENTS_SUBJECTS})`);
    }
    const maxDeliver = positiveInteger(options.maxDeliver, DEFAULT_MAX_DELIVER, 'maxDeliver');
    const retryDelayMs = nonNegativeNumber(options.retryDelayMs, DEFAULT_RETRY_DELAY_MS, 'retryDelayMs');
    const config: Partial<ConsumerConfig> = {
      ack_policy: AckPolicy.Explicit,
      deliver_policy: options.deliver === 'all' ? DeliverPolicy.All : DeliverPolicy.New,
      filter_subject: filter,
      ack_wait: nanos(DEFAULT_ACK_WAIT_MS),
      max_deliver: maxDeliver,
    };
    let name: string;
    if (options.durable !== undefined) {
      assertConsumerName(options.durable);
      name = options.durable;
      await this.ensureDurable(EVENTS_STREAM, { ...config, durable_name: name });
    } else {
      name = `ephemeral-${nuid.next()}`;
      try {
        await this.jsm.consumers.add(EVENTS_STREAM, {
          ...config,
          name,
          inactive_threshold: nanos(EPHEMERAL_INACTIVE_MS),
        });
      } catch (error) {
        throw wrap(`${where}: cannot create a consumer on stream ${EVENTS_STREAM}`, error);
      }
    }
    // The handler runs in the trace context its message carried.
    const traced: MessageHandler = (msg) => runInMessageContext(msg.headers, () => handler(msg));
    return this.startPulling(where, EVENTS_STREAM, name, traced, {
      batch: SUBSCRIPTION_BATCH,
      ackWaitMs: DEFAULT_ACK_WAIT_MS,
      maxDeliver,
      retryDelayMs,
      deleteOnStop: options.durable === undefined,
    });
  }

  private async startPulling(
    where: string,
    stream: string,
    consumerName: string,
    handler: MessageHandler,
    settings: PullSettings,
  ): Promise<Subscription> {
    let messages: ConsumerMessages;
    try {
      const consumer = await this.js.consumers.get(stream, consumerName);
      messages = await consumer.consume({ max_messages: settings.batch });
    } catch (error) {
      throw wrap(`${where}: cannot consume from ${consumerName} on stream ${stream}`, error);
    }
    const subscription = new PullSubscription(messages, handler, settings, this.logger, async () => {
      this.subscriptions.delete(subscription);
      await this.nc.flush().catch(() => undefined);
      if (settings.deleteOnStop && !this.nc.isClosed()) {
        await this.jsm.consumers.delete(stream, consumerName).catch(() => undefined);
      }
    });
    this.subscriptions.add(subscription);
    return subscription;
  }

  async kv(bucket: string, options: KvOptions = {}): Promise<KeyValueStore> {
    this.assertOpen(`open bucket ${bucket}`);
    assertBucketName(bucket);
    const history = checkHistory(options.history);
    try {
      const kv = await this.js.views.kv(bucket, { history: history ?? 1 });
      if (history !== undefined) {
        const status = await kv.status();
        if (status.history !== history) {
          await this.jsm.streams.update(status.streamInfo.config.name, { max_msgs_per_subject: history });
        }
      }
      return new NatsKeyValueStore(bucket, kv, this, this.logger);
    } catch (error) {
      throw wrap(`cannot open bucket ${bucket}`, error);
    }
  }

  track(subscription: Subscription): void {
    this.subscriptions.add(subscription);
  }

  untrack(subscription: Subscription): void {
    this.subscriptions.delete(subscription);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.subscriptions].map((s) => s.unsubscribe()));
    if (this.nc.isClosed()) return;
    // drain: flush what was published (and acked), let in-flight requests finish, then close.
    await this.nc.drain().catch(async () => {
      await this.nc.close().catch(() => undefined);
    });
  }
}

interface PullSettings {
  batch: number;
  ackWaitMs: number;
  maxDeliver: number;
  retryDelayMs: number;
  deleteOnStop: boolean;
}

/** Runs the handler for each pulled message in turn: resolve = ack, throw = nak (or term on the last delivery). */
class PullSubscription implements Subscription {
  private stopping = false;
  private readonly done: Promise<void>;
  private stopped: Promise<void> | undefined;

  constructor(
    private readonly messages: ConsumerMessages,
    private readonly handler: MessageHandler,
    private readonly settings: PullSettings,
    private readonly logger: BusLogger | undefined,
    private readonly onStop: () => Promise<void>,
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    try {
      for await (const m of this.messages) {
        // Pulled but not handled before unsubscribe: hand it straight back for redelivery.
        if (this.stopping) quietly(() => m.nak());
        else await this.handle(m);
      }
    } catch (error) {
      if (!this.stopping) {
        this.logger?.warn({ err: error }, 'NATS consumer stopped: no more messages will be delivered');
      }
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    const msg = toBusMessage(m);
    // Tell the server the message is being worked on, so ack wait only bounds a dead consumer.
    const heartbeat = setInterval(() => quietly(() => m.working()), Math.max(100, this.settings.ackWaitMs / 3));
    try {
      await this.handler(msg);
      quietly(() => m.ack());
    } catch (error) {
      if (isPoisonMessage(error)) {
        // Retrying cannot help: off the consumer now, the stream keeps it for inspection.
        quietly(() => m.term());
        this.logger?.warn(
          { subject: m.subject, seq: m.seq, deliveries: msg.deliveryCount, reason: (error as Error).message },
          'undecodable or invalid message set aside',
        );
      } else if (msg.deliveryCount >= this.settings.maxDeliver) {
        quietly(() => m.term());
        this.logger?.warn(
          { subject: m.subject, seq: m.seq, deliveries: msg.deliveryCount, err: error },
          'handler failed on every delivery: message given up',
        );
      } else {
        quietly(() => m.nak(this.settings.retryDelayMs > 0 ? this.settings.retryDelayMs : undefined));
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  unsubscribe(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      await this.messages.close().catch(() => undefined);
      await this.done;
      await this.onStop();
    })();
    return this.stopped;
  }
}

class NatsKeyValueStore implements KeyValueStore {
  constructor(
    readonly bucket: string,
    private readonly kv: KV,
    private readonly bus: NatsBus,
    private readonly logger: BusLogger | undefined,
  ) {}

  private async call<T>(what: string, key: string, fn: () => Promise<T>): Promise<T> {
    const where = `kv ${this.bucket}: ${what} '${key}'`;
    this.bus.assertOpen(where);
    assertKvKey(key);
    return this.bus.throughOutage(where, fn);
  }

  async get(key: string): Promise<KvValue | undefined> {
    const entry = await this.call('get', key, () => this.kv.get(key));
    if (!entry || entry.operation !== 'PUT') return undefined;
    return { value: plainBytes(entry.value), revision: entry.revision };
  }

  async getJson<T>(key: string): Promise<KvValue<T> | undefined> {
    const found = await this.get(key);
    return found && { value: decodeJson<T>(found.value, `kv ${this.bucket} key ${key}`), revision: found.revision };
  }

  put(key: string, value: Uint8Array): Promise<number> {
    return this.call('put', key, () => this.kv.put(key, value));
  }

  putJson(key: string, value: unknown): Promise<number> {
    return this.put(key, encodePayload(value, `kv ${this.bucket} key ${key}`));
  }

  async update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    if (!Number.isInteger(expectedRevision) || expectedRevision < 0) {
      throw new Error(`kv ${this.bucket}: update '${key}': expectedRevision must be an integer >= 0`);
    }
    try {
      return await this.call('update', key, () => this.kv.put(key, value, { previousSeq: expectedRevision }));
    } catch (error) {
      throw this.mismatch(key, expectedRevision, error);
    }
  }

  updateJson(key: string, value: unknown, expectedRevision: number): Promise<number> {
    return this.update(key, encodePayload(value, `kv ${this.bucket} key ${key}`), expectedRevision);
  }

  async create(key: string, value: Uint8Array): Promise<number> {
    try {
      return await this.call('create', key, () => this.kv.create(key, value));
    } catch (error) {
      throw this.mismatch(key, 0, error);
    }
  }

  createJson(key: string, value: unknown): Promise<number> {
    return this.create(key, encodePayload(value, `kv ${this.bucket} key ${key}`));
  }

  /** The server's "wrong last sequence: N" becomes a RevisionMismatchError; other errors pass. */
  private mismatch(key: string, expectedRevision: number, error: unknown): unknown {
    const cause = (error as Error).cause ?? error;
    const apiError = (cause as { api_error?: { err_code?: number } }).api_error;
    const match = /wrong last sequence: (\d+)/.exec(String((cause as Error).message));
    if (apiError?.err_code !== 10071 && !match) return error;
    return new RevisionMismatchError(this.bucket, key, expectedRevision, match ? Number(match[1]) : undefined);
  }

  async delete(key: string): Promise<void> {
    await this.call('delete', key, () => this.kv.delete(key));
  }

  async keys(prefix = ''): Promise<string[]> {
    const where = `kv ${this.bucket}: keys '${prefix}'`;
    this.bus.assertOpen(where);
    assertKvPrefix(prefix);
    try {
      const found: string[] = [];
      for await (const key of await this.kv.keys(kvPrefixFilter(prefix))) {
        if (key.startsWith(prefix)) found.push(key);
      }
      return found.sort();
    } catch (error) {
      throw wrap(where, error);
    }
  }

  history(key: string): Promise<KvEntry[]> {
    return this.call('history of', key, async () => {
      const entries: KvEntry[] = [];
      for await (const entry of await this.kv.history({ key })) entries.push(toKvEntry(entry));
      return entries;
    });
  }

  async watch(options: KvWatchOptions, handler: KvWatchHandler): Promise<Subscription> {
    const prefix = options.prefix ?? '';
    const where = `kv ${this.bucket}: watch '${prefix}'`;
    this.bus.assertOpen(where);
    assertKvPrefix(prefix);
    const include = options.updatesOnly
      ? KvWatchInclude.UpdatesOnly
      : options.includeHistory
        ? KvWatchInclude.AllHistory
        : KvWatchInclude.LastValue;
    // The client signals "initial entries all received" either before `watch` returns (then
    // everything received so far is initial) or as a marker inside the iterator, after them.
    let returned = false;
    let initializedEarly = false;
    let markInitialized!: () => void;
    const initialized = new Promise<void>((resolve) => (markInitialized = resolve));
    let iterator: Awaited<ReturnType<KV['watch']>>;
    try {
      iterator = await this.kv.watch({
        key: kvPrefixFilter(prefix),
        include,
        initializedFn: () => {
          if (returned) markInitialized();
          else initializedEarly = true;
        },
      });
    } catch (error) {
      throw wrap(where, error);
    }
    returned = true;
    let initialCount = Number.POSITIVE_INFINITY;
    if (initializedEarly) initialCount = iterator.getReceived();
    if (initialCount === 0) markInitialized();
    let seen = 0;
    let stopping = false;
    const done = (async () => {
      try {
        for await (const entry of iterator) {
          if (stopping) break;
          if (entry.key.startsWith(prefix)) {
            try {
              await handler(toKvEntry(entry));
            } catch (error) {
              this.logger?.warn(
                { bucket: this.bucket, key: entry.key, revision: entry.revision, err: error },
                'kv watch handler failed',
              );
            }
          }
          if (++seen === initialCount) markInitialized();
        }
      } catch (error) {
        if (!stopping) this.logger?.warn({ bucket: this.bucket, prefix, err: error }, 'kv watch ended');
      } finally {
        markInitialized();
      }
    })();
    const subscription: Subscription = {
      unsubscribe: async () => {
        stopping = true;
        this.bus.untrack(subscription);
        iterator.stop();
        await done;
      },
    };
    this.bus.track(subscription);
    await initialized;
    return subscription;
  }
}

// ------------------------------------------------------------------ conversions and errors

function toNatsHeaders(headers: Record<string, string> | undefined): MsgHdrs | undefined {
  const entries = Object.entries(headers ?? {});
  if (entries.length === 0) return undefined;
  const h = natsHeaders();
  for (const [name, value] of entries) h.set(name, value);
  return h;
}

function fromNatsHeaders(h: MsgHdrs | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  if (!h) return result;
  for (const name of h.keys()) {
    if (/^nats-/i.test(name)) continue;
    result[name] = h.get(name);
  }
  return result;
}

function toBusMessage(m: JsMsg): BusMessage {
  const deliveryCount = m.info.deliveryCount;
  const data = plainBytes(m.data);
  return {
    subject: m.subject,
    data,
    json: <T>() => decodeJson<T>(data, `message on ${m.subject}`),
    headers: fromNatsHeaders(m.headers),
    seq: m.seq,
    deliveryCount,
    redelivered: deliveryCount > 1,
  };
}

function toKvEntry(entry: NatsKvEntry): KvEntry {
  const value = plainBytes(entry.value);
  return {
    key: entry.key,
    value,
    revision: entry.revision,
    operation: entry.operation === 'PUT' ? 'put' : 'delete',
    json: <T>() => decodeJson<T>(value, `kv ${entry.bucket} key ${entry.key}`),
  };
}

/** The client hands out Buffers; the port promises plain Uint8Arrays (a view, no copy). */
function plainBytes(data: Uint8Array): Uint8Array {
  return data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * NATS failures that pass on their own: a request with no answer in time, or no connection
 * while the client reconnects. A closed connection or a refusal by the server does not.
 */
const TRANSIENT_NATS_CODES = new Set(['TIMEOUT', 'DISCONNECT', 'CONNECTION_REFUSED', 'CONNECTION_TIMEOUT', '408']);

function errorCode(error: unknown): string | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  return (error as { code?: unknown }).code === undefined ? undefined : String((error as { code: unknown }).code);
}

function isNotFound(error: unknown): boolean {
  const apiError = (error as { api_error?: { code?: number } }).api_error;
  return apiError?.code === 404 || /not found/i.test(String((error as Error).message));
}

function isAlreadyExists(error: unknown): boolean {
  return /already (exists|in use)/i.test(String((error as Error).message));
}

function wrap(context: string, error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  const wrapped = new Error(`${context}: ${message}`, { cause: error });
  return wrapped;
}

function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // The connection is gone: the server redelivers after ack wait.
  }
}
