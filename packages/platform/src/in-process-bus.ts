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
  DEFAULT_DUPLICATE_WINDOW_MS,
  DEFAULT_MAX_DELIVER,
  DEFAULT_RETRY_DELAY_MS,
  RevisionMismatchError,
  assertHeaders,
  checkHistory,
  decodeJson,
  isPoisonMessage,
  encodePayload,
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
  subjectMatches,
} from './subjects.ts';
import { runInMessageContext, withTraceHeaders } from './telemetry-context.ts';

/**
 * The bus in memory, for the one-machine mode: the same events stream, durable consumers and
 * buckets as the NATS adapter, held by this process and gone when it exits. Handlers run
 * asynchronously, never inside `publish`.
 */
export interface InProcessBusOptions {
  /** How long the events stream keeps a message. Default 7 days. */
  eventsMaxAgeMs?: number;
  /** The msgId dedupe window. Default 2 minutes. */
  duplicateWindowMs?: number;
  logger?: BusLogger;
}

const DEFAULT_EVENTS_MAX_AGE_MS = 7 * 24 * 3600_000;

export function createInProcessBus(options: InProcessBusOptions = {}): Bus {
  return new InProcessBus(options);
}

interface StoredMessage {
  seq: number;
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
  time: number;
}

interface Delivery {
  msg: StoredMessage;
  deliveryCount: number;
}

/** What streams, consumers and buckets need from their bus. */
interface Host {
  readonly logger: BusLogger | undefined;
  /** A timer the bus clears on close. */
  later(ms: number, fn: () => void): void;
}

class InProcessBus implements Bus {
  private readonly events: MemoryStream;
  private readonly buckets = new Map<string, MemoryBucket>();
  private readonly subscriptions = new Set<Subscription>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly duplicateWindowMs: number;
  private closed = false;
  private readonly host: Host;

  constructor(options: InProcessBusOptions) {
    this.duplicateWindowMs = nonNegativeNumber(
      options.duplicateWindowMs,
      DEFAULT_DUPLICATE_WINDOW_MS,
      'duplicateWindowMs',
    );
    const maxAgeMs = positiveInteger(options.eventsMaxAgeMs, DEFAULT_EVENTS_MAX_AGE_MS, 'eventsMaxAgeMs');
    this.host = {
      logger: options.logger,
      later: (ms, fn) => {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          fn();
        }, ms);
        this.timers.add(timer);
      },
    };
    this.events = new MemoryStream(EVENTS_STREAM, EVENTS_SUBJECTS, maxAgeMs, this.duplicateWindowMs);
  }

  private assertOpen(what: string): void {
    if (this.closed) throw new BusClosedError(what);
  }

  async publish(subject: string, data: Payload, options: PublishOptions = {}): Promise<PublishAck> {
    this.assertOpen(`publish to ${subject}`);
    const where = `publish to ${subject}`;
    assertSubject(subject);
    assertHeaders(options.headers, where);
    const bytes = encodePayload(data, where);
    if (!subjectMatches(this.events.subjects, subject)) throw new Error(`${where}: no stream captures this subject`);
    // The active trace context rides along as `traceparent` unless the caller set one.
    return this.events.append(subject, bytes, { ...withTraceHeaders(options.headers) }, options.msgId);
  }

  async subscribe(filter: string, handler: MessageHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    this.assertOpen(`subscribe to ${filter}`);
    assertSubjectFilter(filter);
    if (!filterContains(EVENTS_SUBJECTS, filter)) {
      throw new Error(`subscribe to ${filter}: outside stream ${EVENTS_STREAM} (${EVENTS_SUBJECTS})`);
    }
    const maxDeliver = positiveInteger(options.maxDeliver, DEFAULT_MAX_DELIVER, 'maxDeliver');
    const retryDelayMs = nonNegativeNumber(options.retryDelayMs, DEFAULT_RETRY_DELAY_MS, 'retryDelayMs');
    const stream = this.events;
    const startSeq = options.deliver === 'all' ? stream.firstSeq : stream.lastSeq + 1;
    let consumer: MemoryConsumer;
    if (options.durable !== undefined) {
      assertConsumerName(options.durable);
      const existing = stream.durables.get(options.durable);
      if (existing && existing.filter !== filter) {
        throw new Error(
          `subscribe to ${filter}: durable '${options.durable}' already exists with filter ${existing.filter}`,
        );
      }
      consumer = existing ?? new MemoryConsumer(stream, filter, startSeq, this.host);
      stream.durables.set(options.durable, consumer);
    } else {
      consumer = new MemoryConsumer(stream, filter, startSeq, this.host);
    }
    consumer.maxDeliver = maxDeliver;
    stream.consumers.add(consumer);
    // The handler runs in the trace context its message carried.
    const traced: MessageHandler = (msg) => runInMessageContext(msg.headers, () => handler(msg));
    const worker = consumer.addWorker(traced, retryDelayMs);
    const subscription: Subscription = {
      unsubscribe: async () => {
        this.subscriptions.delete(subscription);
        await worker.stop();
        if (options.durable === undefined) stream.consumers.delete(consumer);
      },
    };
    this.subscriptions.add(subscription);
    return subscription;
  }

  async kv(bucket: string, options: KvOptions = {}): Promise<KeyValueStore> {
    this.assertOpen(`open bucket ${bucket}`);
    assertBucketName(bucket);
    const history = checkHistory(options.history);
    let store = this.buckets.get(bucket);
    if (!store) {
      store = new MemoryBucket(bucket, history ?? 1, this.host, (what) => this.assertOpen(what));
      this.buckets.set(bucket, store);
    } else if (history !== undefined) {
      store.setHistory(history);
    }
    return store;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    await Promise.all([...this.subscriptions].map((s) => s.unsubscribe()));
    for (const bucket of this.buckets.values()) await bucket.closeWatches();
  }
}

// ------------------------------------------------------------------ streams and consumers

class MemoryStream {
  readonly messages = new Map<number, StoredMessage>();
  firstSeq = 1;
  lastSeq = 0;
  readonly consumers = new Set<MemoryConsumer>();
  readonly durables = new Map<string, MemoryConsumer>();
  /** msgId -> first copy; a Map keeps insertion order, which is time order. */
  private readonly seen = new Map<string, { seq: number; time: number }>();

  constructor(
    readonly name: string,
    readonly subjects: string,
    private readonly maxAgeMs: number,
    private readonly duplicateWindowMs: number,
  ) {}

  append(subject: string, data: Uint8Array, headers: Record<string, string>, msgId: string | undefined): PublishAck {
    const now = Date.now();
    this.expire(now);
    if (msgId !== undefined) {
      const first = this.seen.get(msgId);
      if (first) return { seq: first.seq, duplicate: true };
    }
    const seq = ++this.lastSeq;
    this.messages.set(seq, { seq, subject, data, headers, time: now });
    if (msgId !== undefined) this.seen.set(msgId, { seq, time: now });
    for (const consumer of this.consumers) consumer.pump();
    return { seq, duplicate: false };
  }

  /** Drops messages past their max age and dedupe ids past the window. */
  expire(now: number): void {
    for (const [id, first] of this.seen) {
      if (now - first.time < this.duplicateWindowMs) break;
      this.seen.delete(id);
    }
    while (this.firstSeq <= this.lastSeq) {
      const msg = this.messages.get(this.firstSeq);
      if (msg && now - msg.time < this.maxAgeMs) break;
      this.messages.delete(this.firstSeq);
      this.firstSeq++;
    }
  }
}

/**
 * A consumer: a position in a stream, the messages to redeliver, and the workers (one per
 * subscribe call) it hands messages to, one message per worker at a time.
 */
class MemoryConsumer {
  maxDeliver = DEFAULT_MAX_DELIVER;
  private cursor: number;
  private readonly ready: Delivery[] = [];
  private readonly workers = new Set<Worker>();

  constructor(
    readonly stream: MemoryStream,
    readonly filter: string,
    startSeq: number,
    private readonly host: Host,
  ) {
    this.cursor = startSeq;
  }

  addWorker(handler: MessageHandler, retryDelayMs: number): Worker {
    const worker = new Worker(this, handler, retryDelayMs);
    this.workers.add(worker);
    queueMicrotask(() => this.pump());
    return worker;
  }

  removeWorker(worker: Worker): void {
    this.workers.delete(worker);
  }

  /** Hands the next messages to idle workers. */
  pump(): void {
    for (const worker of this.workers) {
      if (worker.busy) continue;
      const delivery = this.next();
      if (!delivery) return;
      worker.run(delivery);
    }
  }

  private next(): Delivery | undefined {
    while (this.ready.length > 0) {
      const delivery = this.ready.shift()!;
      if (this.stream.messages.has(delivery.msg.seq)) return delivery;
    }
    this.stream.expire(Date.now());
    this.cursor = Math.max(this.cursor, this.stream.firstSeq);
    while (this.cursor <= this.stream.lastSeq) {
      const msg = this.stream.messages.get(this.cursor++);
      if (msg && subjectMatches(this.filter, msg.subject)) return { msg, deliveryCount: 1 };
    }
    return undefined;
  }

  settle(delivery: Delivery, error: unknown, retryDelayMs: number): void {
    const { msg, deliveryCount } = delivery;
    if (error === undefined) return;
    if (isPoisonMessage(error)) {
      this.host.logger?.warn(
        { stream: this.stream.name, subject: msg.subject, seq: msg.seq, reason: (error as Error).message },
        'undecodable or invalid message set aside',
      );
      return;
    }
    if (deliveryCount < this.maxDeliver) {
      this.host.later(retryDelayMs, () => {
        this.ready.push({ msg, deliveryCount: deliveryCount + 1 });
        this.pump();
      });
      return;
    }
    this.host.logger?.warn(
      { stream: this.stream.name, subject: msg.subject, seq: msg.seq, deliveries: deliveryCount, err: error },
      'handler failed on every delivery: message given up',
    );
  }
}

class Worker {
  busy = false;
  private stopped = false;
  private current: Promise<void> | undefined;

  constructor(
    private readonly consumer: MemoryConsumer,
    private readonly handler: MessageHandler,
    private readonly retryDelayMs: number,
  ) {}

  run(delivery: Delivery): void {
    this.busy = true;
    this.current = (async () => {
      let failure: unknown = undefined;
      try {
        // Never inside the publisher's call stack: the handler starts on a later tick.
        await Promise.resolve();
        await this.handler(toBusMessage(delivery));
      } catch (error) {
        failure = error ?? new Error('handler threw undefined');
      }
      this.consumer.settle(delivery, failure, this.retryDelayMs);
      this.busy = this.stopped;
      this.current = undefined;
      this.consumer.pump();
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.busy = true;
    this.consumer.removeWorker(this);
    await this.current;
    this.consumer.pump();
  }
}

function toBusMessage({ msg, deliveryCount }: Delivery): BusMessage {
  const data = new Uint8Array(msg.data);
  return {
    subject: msg.subject,
    data,
    json: <T>() => decodeJson<T>(data, `message on ${msg.subject}`),
    headers: { ...msg.headers },
    seq: msg.seq,
    deliveryCount,
    redelivered: deliveryCount > 1,
  };
}

// ------------------------------------------------------------------ key-value buckets

interface StoredEntry {
  key: string;
  value: Uint8Array;
  revision: number;
  operation: 'put' | 'delete';
}

class MemoryBucket implements KeyValueStore {
  private revision = 0;
  private readonly entries = new Map<string, StoredEntry[]>();
  private readonly watchers = new Set<MemoryWatcher>();

  constructor(
    readonly bucket: string,
    private historyLimit: number,
    private readonly host: Host,
    private readonly assertOpen: (what: string) => void,
  ) {}

  setHistory(history: number): void {
    this.historyLimit = history;
    for (const list of this.entries.values()) list.splice(0, Math.max(0, list.length - history));
  }

  private latest(key: string): StoredEntry | undefined {
    const list = this.entries.get(key);
    return list?.[list.length - 1];
  }

  private write(key: string, value: Uint8Array, operation: 'put' | 'delete', expectedRevision?: number): number {
    this.assertOpen(`write key ${key} of bucket ${this.bucket}`);
    assertKvKey(key);
    const latest = this.latest(key);
    if (expectedRevision !== undefined && (latest?.revision ?? 0) !== expectedRevision) {
      throw new RevisionMismatchError(this.bucket, key, expectedRevision, latest?.revision ?? 0);
    }
    const entry: StoredEntry = { key, value: new Uint8Array(value), revision: ++this.revision, operation };
    const list = this.entries.get(key) ?? [];
    list.push(entry);
    list.splice(0, Math.max(0, list.length - this.historyLimit));
    this.entries.set(key, list);
    for (const watcher of this.watchers) watcher.offer(entry);
    return entry.revision;
  }

  async get(key: string): Promise<KvValue | undefined> {
    this.assertOpen(`get key ${key} of bucket ${this.bucket}`);
    assertKvKey(key);
    const latest = this.latest(key);
    if (!latest || latest.operation === 'delete') return undefined;
    return { value: new Uint8Array(latest.value), revision: latest.revision };
  }

  async getJson<T>(key: string): Promise<KvValue<T> | undefined> {
    const found = await this.get(key);
    return found && { value: decodeJson<T>(found.value, `kv ${this.bucket} key ${key}`), revision: found.revision };
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    return this.write(key, value, 'put');
  }

  async putJson(key: string, value: unknown): Promise<number> {
    return this.write(key, encodePayload(value, `kv ${this.bucket} key ${key}`), 'put');
  }

  async update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    return this.write(key, value, 'put', expectedRevision);
  }

  async updateJson(key: string, value: unknown, expectedRevision: number): Promise<number> {
    return this.update(key, encodePayload(value, `kv ${this.bucket} key ${key}`), expectedRevision);
  }

  async create(key: string, value: Uint8Array): Promise<number> {
    assertKvKey(key);
    const latest = this.latest(key);
    if (latest && latest.operation === 'put') {
      throw new RevisionMismatchError(this.bucket, key, 0, latest.revision);
    }
    return this.write(key, value, 'put', latest?.revision ?? 0);
  }

  async createJson(key: string, value: unknown): Promise<number> {
    return this.create(key, encodePayload(value, `kv ${this.bucket} key ${key}`));
  }

  async delete(key: string): Promise<void> {
    this.write(key, new Uint8Array(0), 'delete');
  }

  async keys(prefix = ''): Promise<string[]> {
    this.assertOpen(`list keys of bucket ${this.bucket}`);
    assertKvPrefix(prefix);
    return [...this.entries.entries()]
      .filter(([key, list]) => key.startsWith(prefix) && list[list.length - 1]?.operation === 'put')
      .map(([key]) => key)
      .sort();
  }

  async history(key: string): Promise<KvEntry[]> {
    this.assertOpen(`read history of key ${key} of bucket ${this.bucket}`);
    assertKvKey(key);
    return (this.entries.get(key) ?? []).map((entry) => toKvEntry(entry, this.bucket));
  }

  async watch(options: KvWatchOptions, handler: KvWatchHandler): Promise<Subscription> {
    this.assertOpen(`watch bucket ${this.bucket}`);
    const prefix = options.prefix ?? '';
    assertKvPrefix(prefix);
    const watcher = new MemoryWatcher(this.bucket, prefix, handler, this.host.logger, () =>
      this.watchers.delete(watcher),
    );
    let initial: StoredEntry[] = [];
    if (!options.updatesOnly) {
      const lists = [...this.entries.entries()].filter(([key]) => key.startsWith(prefix)).map(([, list]) => list);
      initial = options.includeHistory ? lists.flat() : lists.map((list) => list[list.length - 1]!);
      initial.sort((a, b) => a.revision - b.revision);
    }
    for (const entry of initial) watcher.offer(entry);
    this.watchers.add(watcher);
    await watcher.mark();
    return watcher;
  }

  async closeWatches(): Promise<void> {
    await Promise.all([...this.watchers].map((w) => w.unsubscribe()));
  }
}

function toKvEntry(entry: StoredEntry, bucket: string): KvEntry {
  const value = new Uint8Array(entry.value);
  return {
    key: entry.key,
    value,
    revision: entry.revision,
    operation: entry.operation,
    json: <T>() => decodeJson<T>(value, `kv ${bucket} key ${entry.key}`),
  };
}

/** Hands a watch's entries to its handler one at a time, in order. */
class MemoryWatcher implements Subscription {
  private readonly queue: Array<StoredEntry | (() => void)> = [];
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly bucket: string,
    private readonly prefix: string,
    private readonly handler: KvWatchHandler,
    private readonly logger: BusLogger | undefined,
    private readonly onStop: () => void,
  ) {}

  offer(entry: StoredEntry): void {
    if (entry.key.startsWith(this.prefix)) this.push(entry);
  }

  /** Resolves once everything queued so far was handled. */
  mark(): Promise<void> {
    return new Promise((resolve) => this.push(resolve));
  }

  private push(item: StoredEntry | (() => void)): void {
    if (this.stopped) {
      if (typeof item === 'function') item();
      return;
    }
    this.queue.push(item);
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    await Promise.resolve();
    while (this.queue.length > 0 && !this.stopped) {
      const item = this.queue.shift()!;
      if (typeof item === 'function') {
        item();
        continue;
      }
      try {
        await this.handler(toKvEntry(item, this.bucket));
      } catch (error) {
        this.logger?.warn(
          { bucket: this.bucket, key: item.key, revision: item.revision, err: error },
          'kv watch handler failed',
        );
      }
    }
    this.running = undefined;
  }

  async unsubscribe(): Promise<void> {
    this.stopped = true;
    this.onStop();
    for (const item of this.queue.splice(0)) if (typeof item === 'function') item();
    await this.running;
  }
}
