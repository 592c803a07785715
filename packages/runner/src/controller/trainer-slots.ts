import type { KeyValueStore } from '@transferlab/platform';
import { type CellLease, type HeldLease, KvLeases, type LeaseOptions, sleep } from './cell-lease.ts';

/**
 * One cap on the trainers running at once across every sweep and every controller that shares
 * the sweeps' KV bucket: `cap` slots, `trainers.slot.0` .. `trainers.slot.<cap-1>`, each a lease
 * (cell-lease.ts) that a cell holds while its trainer runs. The cap lives in KV, not in a
 * controller's memory, so it holds across sweeps and across a controller restart: a controller
 * that shuts down while its Kubernetes trainers run on keeps their slots (`HeldLease.keep`), and
 * the next one, resuming those sweeps, adopts each slot for the same sweep and cell at once.
 *
 * Waiting cells poll; no queue order is kept (a cell of any sweep may take the next free slot).
 * A controller killed without its shutdown leaves slots that expire after the lease TTL while
 * its trainers may still run: until they are adopted, the cap can be exceeded by those.
 */
export function slotKey(index: number): string {
  return `trainers.slot.${index}`;
}

export class TrainerSlots {
  private readonly leases: KvLeases;

  constructor(
    kv: () => Promise<KeyValueStore>,
    instance: string,
    readonly cap: number,
    options: LeaseOptions = {},
  ) {
    if (!Number.isInteger(cap) || cap < 1) throw new Error(`trainer cap: expected a whole number >= 1, got ${cap}`);
    this.leases = new KvLeases(kv, instance, options);
  }

  /**
   * Waits for a slot for this sweep's cell, or until the signal aborts (undefined). A slot an
   * earlier controller kept for the same sweep and cell is taken first. `onWait` hears once,
   * with the slots' holders, that every slot is taken.
   */
  async acquire(
    claim: { sweepId: string; cellId: string },
    options: { signal: AbortSignal; onWait?: (holders: CellLease[]) => void },
  ): Promise<HeldLease | undefined> {
    let told = false;
    while (!options.signal.aborted) {
      const slots = await Promise.all(
        Array.from({ length: this.cap }, async (_, index) => ({
          key: slotKey(index),
          lease: (await this.leases.read(slotKey(index)))?.value,
        })),
      );
      const mine = slots.filter(
        ({ lease }) => lease && lease.sweepId === claim.sweepId && lease.cellId === claim.cellId,
      );
      const free = slots.filter(({ lease }) => !lease || this.leases.free(lease, claim));
      for (const { key } of [...mine, ...free]) {
        const held = await this.leases.tryTake(key, claim);
        if (held) return held;
      }
      if (!told && free.length === 0) {
        told = true;
        options.onWait?.(slots.flatMap(({ lease }) => (lease ? [lease] : [])));
      }
      await sleep(this.leases.pollMs, options.signal);
    }
    return undefined;
  }

  /** How many slots are held now (for tests and status). */
  async held(): Promise<number> {
    const now = Date.now();
    let count = 0;
    for (let index = 0; index < this.cap; index++) {
      const lease = (await this.leases.read(slotKey(index)))?.value;
      if (lease && lease.expiresAt > now) count += 1;
    }
    return count;
  }
}
