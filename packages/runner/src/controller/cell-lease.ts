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
  now?: () => number;
}

export interface HeldLease {
  /** Aborted if the lease was lost (this holder stalled past its expiry and another took it). */
  lost: AbortSignal;
  release(): Promise<void>;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });

export class CellLeases {
  private readonly ttlMs: number;
  private readonly pollMs: number;
  private readonly now: () => number;

  constructor(
    private readonly kv: () => Promise<KeyValueStore>,
    /** This controller's instance id: a lease it holds names it. */
    private readonly instance: string,
    options: LeaseOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 60_000;
    this.pollMs = options.pollMs ?? 2000;
    this.now = options.now ?? Date.now;
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
    const kv = await this.kv();
    const key = leaseKey(cellId);
    const holder = `${this.instance}/${sweepId}`;
    const fresh = (): CellLease => ({ holder, sweepId, expiresAt: this.now() + this.ttlMs });
    let told = false;
    // Most cells were never leased: create first (one round trip), and read only when that fails.
    let tryCreate = true;
    while (!options.signal.aborted) {
      let revision: number | undefined;
      const created = tryCreate;
      tryCreate = false;
      try {
        const current = created ? undefined : await kv.getJson<CellLease>(key);
        if (!current) {
          revision = await kv.createJson(key, fresh());
        } else if (this.free(current.value, sweepId, holder)) {
          revision = await kv.updateJson(key, fresh(), current.revision);
        } else if (!told) {
          told = true;
          options.onWait?.(current.value);
        }
      } catch (error) {
        // Another sweep took it between our read and write: wait like any other time.
        if (!(error instanceof RevisionMismatchError)) throw error;
      }
      if (revision !== undefined) return this.hold(kv, key, fresh(), revision);
      // The lease exists (held, released or expired): read it at once rather than after a poll.
      if (created) continue;
      await sleep(this.pollMs, options.signal);
    }
    return undefined;
  }

  /**
   * Released, expired, or left by an earlier run of this very sweep (a controller that restarted
   * resumes its sweeps; the lease of its previous life must not make it wait a TTL).
   */
  private free(lease: CellLease, sweepId: string, holder: string): boolean {
    return lease.expiresAt <= this.now() || (lease.sweepId === sweepId && lease.holder !== holder);
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
    return {
      lost: lost.signal,
      release: async () => {
        clearInterval(timer);
        await renewing;
        if (lost.signal.aborted) return;
        // Released by compare-and-set: a lease someone else holds by now is never touched.
        await kv.updateJson(key, { ...lease, expiresAt: 0 }, current).catch(() => undefined);
      },
    };
  }
}
