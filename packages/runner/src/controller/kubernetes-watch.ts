// One list-then-watch of a kind of object in a namespace, kept up to date across the API
// server's quirks: a watch that ends is resumed from the last resourceVersion seen, a
// "410 Gone" (that version is no longer in the server's history) makes it list again, and a
// dropped connection is retried with a growing delay.
import type { Watch } from '@kubernetes/client-node';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface KubeObject {
  metadata?: { name?: string; resourceVersion?: string };
}

export interface ResourceWatchOptions<T extends KubeObject> {
  /** For logs: 'Job', 'Pod'. */
  kind: string;
  /** The collection's URL path, e.g. `/apis/batch/v1/namespaces/NS/jobs`. */
  path: string;
  labelSelector: string;
  watch: Watch;
  /** The list call for the same collection and selector (the typed client's). */
  list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
  /** Every change, including the differences a re-list finds (DELETED for what vanished meanwhile). */
  onChange: (type: WatchEventType, object: T) => void;
  /** After every list (the first one and each re-list), once its changes were dispatched. */
  onResync?: (listStartedAt: number) => void;
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Delay before reconnecting after a failure: doubles from `initialMs` up to `maxMs`. Default 250 ms .. 30 s. */
  reconnectDelayMs?: { initialMs: number; maxMs: number };
  /** The server ends each watch request after this long; the watch then resumes. Default 300 s. */
  timeoutSeconds?: number;
}

/** What happened to a watch so far: tests and logs read it. */
export interface WatchStats {
  lists: number;
  watches: number;
  /** 410 Gone answers (as an ERROR event or an HTTP status). */
  gone: number;
  /** Watch requests that ended with an error (dropped connections, refused requests). */
  failures: number;
}

/** A watch request that lasted this long was healthy: the next reconnect needs no back-off. */
const HEALTHY_MS = 5_000;

/**
 * The objects of one collection, kept current by list + watch. `start()` resolves after the
 * first list; from then on `objects` mirrors the server and `onChange` reports every change.
 */
export class ResourceWatch<T extends KubeObject> {
  readonly objects = new Map<string, T>();
  readonly stats: WatchStats = { lists: 0, watches: 0, gone: 0, failures: 0 };
  private resourceVersion = '';
  private stopped = false;
  private generation = 0;
  private request: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private delayMs: number;
  private started: Promise<void> | undefined;

  constructor(private readonly options: ResourceWatchOptions<T>) {
    this.delayMs = this.initialDelay;
  }

  private get initialDelay(): number {
    return this.options.reconnectDelayMs?.initialMs ?? 250;
  }

  /** Lists, then watches; resolves once the first list is in `objects` (rejects when it fails). */
  start(): Promise<void> {
    this.started ??= (async () => {
      await this.relist();
      void this.connect();
    })().catch((error: unknown) => {
      this.started = undefined; // the next start() tries again
      throw error;
    });
    return this.started;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    this.request?.abort();
    this.request = undefined;
  }

  private async relist(): Promise<void> {
    const startedAt = Date.now();
    const list = await this.options.list();
    this.stats.lists += 1;
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    const fresh = new Map<string, T>();
    for (const item of list.items) if (item.metadata?.name) fresh.set(item.metadata.name, item);
    const vanished = [...this.objects.entries()].filter(([name]) => !fresh.has(name));
    const present = new Set(this.objects.keys());
    this.objects.clear();
    for (const [name, item] of fresh) this.objects.set(name, item);
    for (const [, item] of vanished) this.dispatch('DELETED', item);
    for (const [name, item] of fresh) this.dispatch(present.has(name) ? 'MODIFIED' : 'ADDED', item);
    this.options.onResync?.(startedAt);
  }

  /** Watches from the last resourceVersion (after a list when there is none). */
  private async connect(): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.generation;
    const since = Date.now();
    const timeoutSeconds = this.options.timeoutSeconds ?? 300;
    let sawEvents = false;
    try {
      if (!this.resourceVersion) await this.relist();
      if (this.stopped) return;
      this.stats.watches += 1;
      const request = await this.options.watch.watch(
        this.options.path,
        {
          labelSelector: this.options.labelSelector,
          resourceVersion: this.resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds,
        },
        (type: string, object: T | Status) => {
          if (generation !== this.generation) return;
          if (type !== 'ERROR') sawEvents = true;
          this.onEvent(type, object);
        },
        (error: unknown) => {
          if (generation !== this.generation) return;
          this.onDone(error, Date.now() - since, sawEvents);
        },
      );
      if (generation === this.generation && !this.stopped) {
        this.request = request;
        // The server ends each request after timeoutSeconds; one that outlives that by far sits
        // on a connection that died without a word (no FIN): abort it and reconnect.
        clearTimeout(this.watchdog);
        this.watchdog = setTimeout(
          () => {
            if (generation === this.generation) request.abort();
          },
          (timeoutSeconds + 30) * 1000,
        );
      } else request.abort();
    } catch (error) {
      // The list failed, or the request could not be made at all.
      if (generation === this.generation) this.onDone(error, Date.now() - since, false);
    }
  }

  private onEvent(type: string, object: T | Status): void {
    if (type === 'ERROR') {
      const status = object as Status;
      if (status.code === 410) {
        // Our resourceVersion is older than the server's history: list again.
        this.stats.gone += 1;
        this.resourceVersion = '';
      } else {
        this.options.log?.(`${this.options.kind} watch error event`, { code: status.code, message: status.message });
      }
      // The server ends the stream after an ERROR; do not wait for it.
      this.request?.abort();
      return;
    }
    const item = object as T;
    const version = item.metadata?.resourceVersion;
    if (version) this.resourceVersion = version;
    this.delayMs = this.initialDelay;
    if (type === 'BOOKMARK') return;
    const name = item.metadata?.name;
    if (!name) return;
    if (type === 'DELETED') this.objects.delete(name);
    else if (type === 'ADDED' || type === 'MODIFIED') this.objects.set(name, item);
    else return;
    this.dispatch(type, item);
  }

  private onDone(error: unknown, lastedMs: number, sawEvents: boolean): void {
    this.request = undefined;
    clearTimeout(this.watchdog);
    if (this.stopped) return;
    const failure = error as { statusCode?: number; code?: number; name?: string; message?: string } | null;
    if (failure?.statusCode === 410 || failure?.code === 410) {
      this.stats.gone += 1;
      this.resourceVersion = '';
    } else if (failure && failure.name !== 'AbortError') {
      this.stats.failures += 1;
      this.options.log?.(`${this.options.kind} watch ended with an error; reconnecting`, {
        error: failure.message ?? String(failure),
        delayMs: this.delayMs,
      });
    }
    if (sawEvents || lastedMs >= HEALTHY_MS) this.delayMs = this.initialDelay;
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.options.reconnectDelayMs?.maxMs ?? 30_000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  private dispatch(type: WatchEventType, object: T): void {
    try {
      this.options.onChange(type, object);
    } catch (error) {
      this.options.log?.(`${this.options.kind} change handler failed`, { error: (error as Error).message });
    }
  }
}

interface Status {
  code?: number;
  message?: string;
}
