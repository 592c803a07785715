import { type KeyValueStore, RevisionMismatchError, token } from '@transferlab/platform';

/**
 * One holder per cell id at a time, across sweeps and controllers: a lease in the sweeps' KV
 * bucket, taken with compare-and-set. Two sweeps that share a cell (the same spec started twice,
 * or two specs with common cells) then train it once: the second waits, and finds the result
 * the first stored. NATS 2.9 KV has no per-key TTL, so a lease carries its own expiry and is
 * renewed while held; a holder that died leaves a lease that expires and is taken over.
 */
export interface CellLease {
  /** `<controller instance>/<sweep id>`: who trains the cell. */
  holder: string;
  sweepId: string;
  /** The cell it is held for: on a trainer slot (trainer-slots.ts), which cell holds the slot. */
  cellId?: string;
  /** Epoch milliseconds; 0 once released. */
  expiresAt: number;
}

export function leaseKey(cellId: string): string {
  return `lease.${token(cellId, 'cell id')}`;
}

export interface LeaseOptions {
  /** How long a lease lives without renewal. Default 60 s. */
  ttlMs?: number;
  /** How often a waiting sweep looks again. Default 2 s. */
  pollMs?: number;
  /**
   * How long a lease kept over a controller restart (`HeldLease.keep`) stays held for the next
   * controller to adopt. Default 15 minutes: a rolling update, not a controller gone for good.
   */
  handoverMs?: number;
  now?: () => number;
}

export interface HeldLease {
  /** Aborted if the lease was lost (this holder stalled past its expiry and another took it). */
  lost: AbortSignal;
  release(): Promise<void>;
  /**
   * Stops renewing but leaves the lease held for `handoverMs`: the controller shuts down while
   * its trainer runs on (a Kubernetes Job), and the next controller, resuming the same sweep,
   * adopts the lease at once; anyone else waits.
   */
  keep(): Promise<void>;
}

export const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });

/**
 * Leases on KV keys, taken by compare-and-set, renewed while held: the engine of the per-cell
 * leases below and of the trainer slots (trainer-slots.ts).
 */
export class KvLeases {
  readonly ttlMs: number;
  readonly pollMs: number;
  private readonly handoverMs: number;
  private readonly now: () => number;

  constructor(
    readonly kv: () => Promise<KeyValueStore>,
    /** This controller's instance id: a lease it holds names it. */
    readonly instance: string,
    options: LeaseOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 60_000;
    this.pollMs = options.pollMs ?? 2000;
    this.handoverMs = options.handoverMs ?? 15 * 60_000;
    this.now = options.now ?? Date.now;
  }

  /** The lease at `key` now, or undefined when there is none. */
  async read(key: string): Promise<{ value: CellLease; revision: number } | undefined> {
    return (await this.kv()).getJson<CellLease>(key);
  }

  /**
   * One try: takes the lease at `key` when it is free for this claim (see `free`), else returns
   * undefined. A compare-and-set lost to another taker counts as not free.
   */
  async tryTake(key: string, claim: { sweepId: string; cellId: string }): Promise<HeldLease | undefined> {
    const kv = await this.kv();
    const holder = `${this.instance}/${claim.sweepId}`;
    const fresh = (): CellLease => ({ holder, ...claim, expiresAt: this.now() + this.ttlMs });
    try {
      // Most keys were never leased: create first (one round trip), and read only when that fails.
      return this.hold(kv, key, fresh(), await kv.createJson(key, fresh()));
    } catch (error) {
      if (!(error instanceof RevisionMismatchError)) throw error;
    }
    try {
      const current = await kv.getJson<CellLease>(key);
      let revision: number | undefined;
      if (!current) revision = await kv.createJson(key, fresh());
      else if (this.free(current.value, claim)) revision = await kv.updateJson(key, fresh(), current.revision);
      return revision === undefined ? undefined : this.hold(kv, key, fresh(), revision);
    } catch (error) {
      if (error instanceof RevisionMismatchError) return undefined;
      throw error;
    }
  }

  /**
   * Released, expired, or left by an earlier run of this very sweep and cell (a controller that
   * restarted resumes its sweeps; the lease of its previous life must not make it wait).
   */
  free(lease: CellLease, claim: { sweepId: string; cellId: string }): boolean {
    const holder = `${this.instance}/${claim.sweepId}`;
    return (
      lease.expiresAt <= this.now() ||
      (lease.sweepId === claim.sweepId && (lease.cellId ?? claim.cellId) === claim.cellId && lease.holder !== holder)
    );
  }

  private hold(kv: KeyValueStore, key: string, lease: CellLease, revision: number): HeldLease {
    const lost = new AbortController();
    let current = revision;
    let renewing = Promise.resolve();
    const renew = (): void => {
      renewing = kv
        .updateJson(key, { ...lease, expiresAt: this.now() + this.ttlMs }, current)
        .then((next) => {
          current = next;
        })
        .catch(() => {
          // Someone took the lease over: this holder stalled past its expiry. Stop the cell.
          clearInterval(timer);
          lost.abort();
        });
    };
    const timer = setInterval(renew, Math.max(1, Math.floor(this.ttlMs / 3)));
    timer.unref();
    // By compare-and-set: a lease someone else holds by now is never touched.
    const settle = async (expiresAt: number): Promise<void> => {
      clearInterval(timer);
      await renewing;
      if (lost.signal.aborted) return;
      await kv.updateJson(key, { ...lease, expiresAt }, current).catch(() => undefined);
    };
    return {
      lost: lost.signal,
      release: () => settle(0),
      keep: () => settle(this.now() + this.handoverMs),
    };
  }
}

/**
 * One holder per cell id at a time, across sweeps and controllers (see the top of this file).
 */
export class CellLeases {
  private readonly leases: KvLeases;

  constructor(kv: () => Promise<KeyValueStore>, instance: string, options: LeaseOptions = {}) {
    this.leases = new KvLeases(kv, instance, options);
  }

  /**
   * Waits until this sweep holds the cell's lease, or the signal aborts (undefined). `onWait`
   * hears once who holds it meanwhile, so the cell can say why it does not start.
   */
  async acquire(
    cellId: string,
    sweepId: string,
    options: { signal: AbortSignal; onWait?: (holder: CellLease) => void },
  ): Promise<HeldLease | undefined> {
    const key = leaseKey(cellId);
    let told = false;
    while (!options.signal.aborted) {
      const held = await this.leases.tryTake(key, { sweepId, cellId });
      if (held) return held;
      if (!told) {
        const current = await this.leases.read(key);
        if (current) {
          told = true;
          options.onWait?.(current.value);
        }
      }
      await sleep(this.leases.pollMs, options.signal);
    }
    return undefined;
  }
}
