// One list-then-watch of a kind of object in a namespace: client-node's informer (ListWatch),
// which lists, watches from the last resourceVersion, and lists again after a "410 Gone". What
// the informer leaves to its user is added here (decision 0011): it stops at any other error,
// so it is restarted with a growing delay; each watch request asks for bookmarks and a server
// timeout, and one that outlives that timeout by far sits on a dead connection and is aborted;
// the executor hears, after every list, that the cache is whole (onResync).
import {
  ADD,
  DELETE,
  ERROR,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  UPDATE,
  Watch,
} from '@kubernetes/client-node';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ResourceWatchOptions<T extends KubernetesObject> {
  /** For logs: 'Job', 'Pod'. */
  kind: string;
  /** The collection's URL path, e.g. `/apis/batch/v1/namespaces/NS/jobs`. */
  path: string;
  labelSelector: string;
  kubeConfig: KubeConfig;
  /** The list call for the same collection and selector (the typed client's). */
  list: () => Promise<KubernetesListObject<T>>;
  /** Every change, including the differences a re-list finds (DELETED for what vanished meanwhile). */
  onChange: (type: WatchEventType, object: T) => void;
  /** After every list (the first one and each re-list), once its changes were dispatched. */
  onResync?: (listStartedAt: number) => void;
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Delay before restarting after a failure: doubles from `initialMs` up to `maxMs`. Default 250 ms .. 30 s. */
  reconnectDelayMs?: { initialMs: number; maxMs: number };
  /** The server ends each watch request after this long; the informer then resumes. Default 300 s. */
  timeoutSeconds?: number;
}

/** What happened to a watch so far: tests and logs read it. */
export interface WatchStats {
  lists: number;
  watches: number;
  /** 410 Gone answers (as an ERROR event or an HTTP status). */
  gone: number;
  /** Lists or watch requests that ended with an error (dropped connections, refused requests). */
  failures: number;
}

/** A watch request that lasted this long was healthy: the next restart needs no back-off. */
const HEALTHY_MS = 5_000;

/**
 * The informer's watch requests, each with bookmarks, a server-side timeout and a watchdog,
 * counted. A 410 that arrives as an ERROR event ends the request at once, reported to the
 * informer as the 410 it is, so that it lists again instead of stopping.
 */
class CountedWatch extends Watch {
  constructor(
    config: KubeConfig,
    private readonly owner: { stats: WatchStats; timeoutSeconds: number; healthy: () => void },
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const { stats, timeoutSeconds } = this.owner;
    stats.watches += 1;
    const since = Date.now();
    let gone = false;
    let sawEvents = false;
    let ended = false;
    // Set once the request is open; events can only come after that.
    const current: { request?: AbortController } = {};
    let watchdog: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      ended = true;
      clearTimeout(watchdog);
      const status = err as { statusCode?: number; code?: number } | null;
      if (gone || status?.statusCode === 410 || status?.code === 410) {
        stats.gone += 1;
        done({ statusCode: 410 });
        return;
      }
      if (sawEvents || Date.now() - since >= HEALTHY_MS) this.owner.healthy();
      done(err);
    };
    current.request = await super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds },
      (phase, object, raw) => {
        if (phase === 'ERROR') {
          if ((object as { code?: number } | undefined)?.code === 410) gone = true;
          // The server ends the stream after an ERROR; do not wait for it.
          current.request?.abort();
        } else sawEvents = true;
        callback(phase, object, raw);
      },
      finish,
    );
    // A request that outlives the server's timeout by far sits on a connection that died
    // without a word (no FIN): abort it, and the informer's error restarts it.
    if (!ended) {
      watchdog = setTimeout(() => current.request?.abort(), (timeoutSeconds + 30) * 1000);
      watchdog.unref();
    }
    return current.request;
  }
}

/**
 * The objects of one collection, kept current by client-node's informer. `start()` resolves
 * after the first list; from then on `get` and `list` mirror the server and `onChange` reports
 * every change.
 */
export class ResourceWatch<T extends KubernetesObject> {
  readonly stats: WatchStats = { lists: 0, watches: 0, gone: 0, failures: 0 };
  private readonly informer: ListWatch<T>;
  private stopped = false;
  private listed = false;
  private lastError: unknown;
  private timer: NodeJS.Timeout | undefined;
  private delayMs: number;
  private started: Promise<void> | undefined;
  /** The namespace of the collection's path (`/…/namespaces/NS/…`), where the informer files objects. */
  private readonly namespace: string | undefined;

  constructor(private readonly options: ResourceWatchOptions<T>) {
    this.namespace = /\/namespaces\/([^/]+)\//.exec(options.path)?.[1];
    this.delayMs = this.initialDelay;
    const watch = new CountedWatch(options.kubeConfig, {
      stats: this.stats,
      timeoutSeconds: options.timeoutSeconds ?? 300,
      healthy: () => (this.delayMs = this.initialDelay),
    });
    const list = async (): Promise<KubernetesListObject<T>> => {
      const startedAt = Date.now();
      const result = await options.list();
      this.stats.lists += 1;
      this.listed = true;
      // The informer applies the list right after this resolves, in the same turn: the cache
      // is whole by the time an immediate runs.
      setImmediate(() => {
        if (!this.stopped) this.options.onResync?.(startedAt);
      });
      return result;
    };
    this.informer = new ListWatch<T>(options.path, watch, list, false, options.labelSelector);
    this.informer.on(ADD, (object) => this.dispatch('ADDED', object));
    this.informer.on(UPDATE, (object) => this.dispatch('MODIFIED', object));
    this.informer.on(DELETE, (object) => this.dispatch('DELETED', object));
    this.informer.on(ERROR, (error) => this.onError(error));
  }

  private get initialDelay(): number {
    return this.options.reconnectDelayMs?.initialMs ?? 250;
  }

  /** Lists, then watches; resolves once the first list is in the cache (rejects when it fails). */
  start(): Promise<void> {
    this.started ??= (async () => {
      this.stopped = false;
      this.lastError = undefined;
      await this.informer.start();
      if (!this.listed) throw this.lastError ?? new Error(`${this.options.kind} list failed`);
    })().catch((error: unknown) => {
      this.started = undefined; // the next start() tries again
      throw error;
    });
    return this.started;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    void this.informer.stop();
  }

  get(name: string): T | undefined {
    return this.informer.get(name, this.namespace);
  }

  list(): readonly T[] {
    return this.informer.list();
  }

  /** The informer stopped: a list or watch failed, or its request was aborted. Restart it later. */
  private onError(error: unknown): void {
    if (this.stopped) return;
    this.lastError = error;
    // Before the first list, start() reports the failure and the caller tries again.
    if (!this.listed) return;
    this.stats.failures += 1;
    const failure = error as { message?: string } | null;
    this.options.log?.(`${this.options.kind} watch ended with an error; reconnecting`, {
      error: failure?.message ?? String(failure),
      delayMs: this.delayMs,
    });
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.options.reconnectDelayMs?.maxMs ?? 30_000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.stopped) void this.informer.start();
    }, delay);
  }

  private dispatch(type: WatchEventType, object: T): void {
    try {
      this.options.onChange(type, object);
    } catch (error) {
      this.options.log?.(`${this.options.kind} change handler failed`, { error: (error as Error).message });
    }
  }
}
