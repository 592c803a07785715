import { randomBytes } from 'node:crypto';
import { type Cell, type SweepSpec, expandGrid } from '@transferlab/experiment';
import {
  ATTRIBUTES,
  type Bus,
  type KeyValueStore,
  type ObjectStore,
  RevisionMismatchError,
  SWEEPS_BUCKET,
  type SweepMetrics,
  cellKey,
  sweepEventSubject,
  sweepKey,
  withSpan,
} from '@transferlab/platform';
import { cellKeys, putJson } from '../cell-store.ts';
import { readResult } from '../evaluate-cell.ts';
import type { StoredResult } from '../evaluate-cell.ts';
import { CellLeases, type LeaseOptions } from './cell-lease.ts';
import { type CellSteps, type Executor } from './ports.ts';
import { TrainerSlots } from './trainer-slots.ts';
import {
  ACTIVE_CELL_STATES,
  type CellRecord,
  type CellState,
  type SweepRecord,
  type SweepState,
  countCells,
  isFinalSweep,
  schedule,
} from './records.ts';

export interface ControllerDeps {
  store: ObjectStore;
  bus: Bus;
  steps: CellSteps;
  executor: Executor;
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Cells by state, queue depth, cell durations and scores; none recorded when absent. */
  metrics?: SweepMetrics;
  /** The per-cell leases' and trainer slots' timing (tests shorten it). */
  leases?: LeaseOptions;
  /**
   * At most this many trainers at once over every sweep of every controller sharing the KV
   * bucket (TRANSFERLAB_TRAINER_CAP): slots kept in KV (trainer-slots.ts). Default: no cap
   * beyond each sweep's concurrency (and, for processes, the executor's own limit).
   */
  trainerCap?: number;
}

export interface StartOptions {
  specDir: string;
  /** The spec's text as the user wrote it, kept with the sweep. */
  specText?: string;
  /** Default 3: the first run and two retries, each resuming from the last checkpoint. */
  maxAttempts?: number;
  /** Overrides the spec's concurrency (e.g. the number of local worker processes). */
  concurrency?: number;
}

/** Published on `transferlab.sweep.event.<id>` whenever a sweep or one of its cells changes. */
export interface SweepEvent {
  sweepId: string;
  state: SweepState;
  cellId?: string;
  cellState?: CellState;
  message?: string;
  counts: Record<CellState, number>;
}

const now = (): string => new Date().toISOString();

/**
 * The Sweeps service's logic: expands a spec into cells, keeps every sweep's and cell's state
 * in the KV bucket, and drives cells through transplant, training and evaluation in
 * dependency order under the sweep's concurrency limit. It holds no state a restart would
 * lose: `resume()` picks up every unfinished sweep from KV.
 */
export class SweepController {
  private kvBucket?: KeyValueStore;
  private readonly drivers = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private readonly concurrency = new Map<string, number>();
  private readonly leases: CellLeases;
  private readonly slots?: TrainerSlots;
  /** Shutting down with the trainers left running: leases and slots are kept for the next controller. */
  private detaching = false;

  constructor(private readonly deps: ControllerDeps) {
    const instance = randomBytes(4).toString('hex');
    this.leases = new CellLeases(() => this.kv(), instance, deps.leases);
    if (deps.trainerCap !== undefined) {
      this.slots = new TrainerSlots(() => this.kv(), instance, deps.trainerCap, deps.leases);
    }
    deps.executor.onStatus?.((sweepId, cellId, status) => {
      this.noteStatus(sweepId, cellId, status).catch((error: unknown) =>
        deps.log?.('cannot record a cell status', { sweepId, cellId, error: (error as Error).message }),
      );
    });
  }

  /** Records what the executor says about a running attempt on the cell, for GetSweep and watchers. */
  async noteStatus(sweepId: string, cellId: string, status: string): Promise<void> {
    await this.updateCell(sweepId, cellId, (record) => ({ ...record, status }));
  }

  private async kv(): Promise<KeyValueStore> {
    this.kvBucket ??= await this.deps.bus.kv(SWEEPS_BUCKET, { history: 5 });
    return this.kvBucket;
  }

  async start(spec: SweepSpec, options: StartOptions): Promise<SweepRecord> {
    const plan = expandGrid(spec);
    const id = `${spec.name}-${randomBytes(4).toString('hex')}`;
    const kv = await this.kv();
    for (const cell of plan.cells) {
      await putJson(this.deps.store, cellKeys.cell(cell.id), cell);
      const record: CellRecord = { cell, state: 'pending', attempts: 0 };
      await kv.putJson(cellKey(id, cell.id), record);
    }
    const record: SweepRecord = {
      id,
      name: spec.name,
      spec,
      specText: options.specText,
      specDir: options.specDir,
      state: 'splitting',
      maxAttempts: options.maxAttempts ?? 3,
      cellIds: plan.cells.map((cell) => cell.id),
      createdAt: now(),
      updatedAt: now(),
    };
    await kv.createJson(sweepKey(id), record);
    if (options.concurrency !== undefined) this.concurrency.set(id, options.concurrency);
    this.drive(id);
    return record;
  }

  async get(id: string): Promise<{ sweep: SweepRecord; cells: CellRecord[] } | undefined> {
    const kv = await this.kv();
    const sweep = (await kv.getJson<SweepRecord>(sweepKey(id)))?.value;
    if (!sweep) return undefined;
    const cells: CellRecord[] = [];
    for (const cellId of sweep.cellIds) {
      const record = (await kv.getJson<CellRecord>(cellKey(id, cellId)))?.value;
      if (record) cells.push(record);
    }
    return { sweep, cells };
  }

  async list(): Promise<SweepRecord[]> {
    const kv = await this.kv();
    const records: SweepRecord[] = [];
    for (const key of await kv.keys('sweep.')) {
      const record = (await kv.getJson<SweepRecord>(key))?.value;
      if (record) records.push(record);
    }
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Stops a sweep: running cells are interrupted (their checkpoints kept), pending ones cancelled. */
  async cancel(id: string): Promise<SweepRecord | undefined> {
    const current = await this.get(id);
    if (!current) return undefined;
    if (isFinalSweep(current.sweep.state)) return current.sweep;
    const sweep = await this.updateSweep(id, (record) => ({ ...record, state: 'cancelled' }));
    this.drivers.get(id)?.abort.abort();
    await this.drivers.get(id)?.done;
    for (const record of current.cells) {
      if (record.state === 'pending' || ACTIVE_CELL_STATES.includes(record.state)) {
        await this.updateCell(id, record.cell.id, (r) => ({ ...r, state: 'cancelled', finishedAt: now() }));
      }
    }
    await this.publish(id, { message: 'cancelled' });
    this.deps.metrics?.sweepFinished(id);
    return sweep;
  }

  async results(id: string): Promise<StoredResult[]> {
    const current = await this.get(id);
    if (!current) return [];
    const results: StoredResult[] = [];
    for (const record of current.cells) {
      const result = await readResult(this.deps.store, record.cell.id);
      if (result) results.push(result);
    }
    return results;
  }

  /** After a restart: every sweep not finished is driven again; cells that were running start over from their checkpoints. */
  async resume(): Promise<string[]> {
    const resumed: string[] = [];
    for (const sweep of await this.list()) {
      if (isFinalSweep(sweep.state) || this.drivers.has(sweep.id)) continue;
      const current = await this.get(sweep.id);
      for (const record of current?.cells ?? []) {
        if (ACTIVE_CELL_STATES.includes(record.state)) {
          await this.updateCell(sweep.id, record.cell.id, (r) => ({ ...r, state: 'pending' }));
        }
      }
      this.drive(sweep.id);
      resumed.push(sweep.id);
    }
    return resumed;
  }

  /** Resolves when the sweep's driver has stopped (finished, failed or cancelled). */
  async wait(id: string): Promise<SweepRecord | undefined> {
    await this.drivers.get(id)?.done;
    return (await this.get(id))?.sweep;
  }

  /**
   * Stops driving every sweep (running cells are interrupted, their checkpoints kept); KV keeps
   * the state. `detach`: the trainers run on (an executor that can leave them, i.e. Kubernetes
   * Jobs) and their cell leases and trainer slots stay held for the next controller to adopt.
   */
  async close(options: { detach?: boolean } = {}): Promise<void> {
    if (options.detach && this.deps.executor.detach) {
      this.deps.executor.detach();
      this.detaching = true;
    }
    for (const driver of this.drivers.values()) driver.abort.abort();
    await Promise.all([...this.drivers.values()].map((driver) => driver.done));
    await this.deps.executor.close();
  }

  private drive(id: string): void {
    const abort = new AbortController();
    // One span per sweep: its cells' steps, the trainers and the services' calls are its children.
    const done = withSpan('sweep', { attributes: { [ATTRIBUTES.sweepId]: id } }, () => this.run(id, abort.signal))
      .catch(async (error: unknown) => {
        const message = (error as Error).message;
        this.deps.log?.('sweep failed', { sweepId: id, error: message });
        await this.updateSweep(id, (record) => ({ ...record, state: 'failed', error: message })).catch(() => undefined);
        await this.publish(id, { message }).catch(() => undefined);
        this.deps.metrics?.sweepFinished(id);
      })
      .finally(() => this.drivers.delete(id));
    this.drivers.set(id, { abort, done });
  }

  private async run(id: string, signal: AbortSignal): Promise<void> {
    let current = await this.get(id);
    if (!current) throw new Error(`sweep ${id} not found`);
    const { sweep } = current;
    this.deps.metrics?.cellCounts(id, countCells(current.cells));
    const plan = expandGrid(sweep.spec);
    if (sweep.state === 'splitting') {
      for (const task of plan.splits) await this.deps.steps.createSplit(task, { specDir: sweep.specDir, sweepId: id });
      if (signal.aborted) return;
      // Only splitting moves on to running: a cancel that came meanwhile stays a cancel.
      await this.updateSweep(id, (record) => (record.state === 'splitting' ? { ...record, state: 'running' } : record));
      await this.publish(id, { message: `${plan.splits.length} split(s) ready` });
    }
    const concurrency =
      this.concurrency.get(id) ?? (sweep.spec.concurrency === 'auto' ? Infinity : sweep.spec.concurrency);
    const running = new Map<string, Promise<void>>();
    for (;;) {
      if (signal.aborted) break;
      current = await this.get(id);
      if (!current || isFinalSweep(current.sweep.state)) break;
      const records = new Map(current.cells.map((record) => [record.cell.id, record]));
      // What this driver runs is active, whatever KV says yet (a state write may still be on its
      // way); what it does not run is not, whatever an earlier controller left there.
      for (const [cellId, record] of records) {
        if (running.has(cellId)) {
          if (!ACTIVE_CELL_STATES.includes(record.state)) records.set(cellId, { ...record, state: 'training' });
        } else if (ACTIVE_CELL_STATES.includes(record.state)) {
          records.set(cellId, { ...record, state: 'pending' });
        }
      }
      const { start, block } = schedule(records, concurrency);
      const ready = [...records.values()].filter(
        (r) => r.state === 'pending' && r.cell.deps.every((dep) => records.get(dep)?.state === 'succeeded'),
      );
      this.deps.metrics?.queueDepth(id, ready.length - start.length);
      for (const cellId of block) {
        await this.updateCell(id, cellId, (r) => ({
          ...r,
          state: 'blocked',
          finishedAt: now(),
          error: 'a cell it depends on failed',
        }));
      }
      for (const cellId of start) {
        const { cell } = records.get(cellId)!;
        const { maxAttempts } = current.sweep;
        const attributes = { [ATTRIBUTES.cellId]: cell.id, [ATTRIBUTES.cellName]: cell.name };
        const task = withSpan('cell', { attributes }, () => this.runCell(id, cell, maxAttempts, signal)).finally(() =>
          running.delete(cellId),
        );
        running.set(cellId, task);
      }
      if (block.length > 0) continue;
      if (running.size === 0) {
        const counts = countCells([...records.values()]);
        const state: SweepState = counts.failed + counts.blocked > 0 ? 'failed' : 'succeeded';
        await this.updateSweep(id, (record) => ({ ...record, state }));
        await this.publish(id, { message: `sweep ${state}` });
        this.deps.metrics?.sweepFinished(id);
        break;
      }
      await Promise.race(running.values());
    }
    await Promise.allSettled(running.values());
  }

  /** One cell through its steps, with retries that resume from the cell's checkpoint. */
  private async runCell(id: string, cell: Cell, maxAttempts: number, signal: AbortSignal): Promise<void> {
    const reuse = async (): Promise<boolean> => {
      const stored = await readResult(this.deps.store, cell.id);
      if (!stored) return false;
      await this.setCellState(id, cell.id, 'succeeded', { reused: true, finishedAt: now() });
      if (cell.kind !== 'measure') this.deps.metrics?.cellScore(id, cell, stored.score);
      return true;
    };
    if (await reuse()) return;
    // One trainer per cell id at a time, whichever sweeps share it (issue 9).
    const lease = await this.leases.acquire(cell.id, id, {
      signal,
      onWait: (holder) =>
        void this.noteStatus(id, cell.id, `waiting: sweep ${holder.sweepId} is training this cell`).catch(
          () => undefined,
        ),
    });
    if (!lease) return;
    try {
      // The sweep that held the lease may have finished the cell meanwhile.
      if (await reuse()) return;
      await this.runLeasedCell(id, cell, maxAttempts, AbortSignal.any([signal, lease.lost]));
    } finally {
      await (this.detaching ? lease.keep() : lease.release());
    }
  }

  private async runLeasedCell(id: string, cell: Cell, maxAttempts: number, signal: AbortSignal): Promise<void> {
    const { attempts: attempt, startedAt } = await this.updateCell(id, cell.id, (r) => ({
      ...r,
      attempts: r.attempts + 1,
      // A new attempt: what the executor said about the last one no longer holds.
      status: undefined,
      startedAt: r.startedAt ?? now(),
    }));
    const seconds = (): number => (Date.now() - Date.parse(startedAt ?? now())) / 1000;
    try {
      if (cell.kind === 'measure') {
        // Nothing to train: its base nets are its dependencies, and the evaluator measures them.
        await this.setCellState(id, cell.id, 'evaluating');
        await this.deps.steps.measure(cell, { sweepId: id });
        await this.setCellState(id, cell.id, 'succeeded', { finishedAt: now(), error: undefined });
        this.deps.metrics?.cellFinished(id, cell, 'succeeded', seconds());
        return;
      }
      if (cell.kind !== 'base') {
        await this.setCellState(id, cell.id, 'transplanting');
        await this.deps.steps.transplant(cell, { sweepId: id });
      }
      await this.setCellState(id, cell.id, 'training');
      const outcome = await this.train(id, cell, attempt, signal);
      if (outcome === 'interrupted') return;
      await this.setCellState(id, cell.id, 'evaluating');
      const result = await this.deps.steps.evaluate(cell, { sweepId: id });
      await this.setCellState(id, cell.id, 'succeeded', { finishedAt: now(), error: undefined });
      this.deps.metrics?.cellFinished(id, cell, 'succeeded', seconds());
      this.deps.metrics?.cellScore(id, cell, result.score);
    } catch (error) {
      if (signal.aborted) return;
      const message = (error as Error).message;
      const retryable = (error as { retryable?: boolean }).retryable !== false;
      const final = !retryable || attempt >= maxAttempts;
      this.deps.log?.('cell failed', { sweepId: id, cellId: cell.id, attempt, error: message, final });
      await this.setCellState(id, cell.id, final ? 'failed' : 'pending', {
        error: `attempt ${attempt}/${maxAttempts}: ${message}`,
        ...(final ? { finishedAt: now() } : {}),
      });
      if (final) this.deps.metrics?.cellFinished(id, cell, 'failed', seconds());
    }
  }

  /** The trainer's run, inside a trainer slot when there is a cap. */
  private async train(
    id: string,
    cell: Cell,
    attempt: number,
    signal: AbortSignal,
  ): Promise<'trained' | 'interrupted'> {
    if (!this.slots) return this.deps.executor.run(cell, { sweepId: id, attempt, signal });
    const cap = this.slots.cap;
    let queued = false;
    const slot = await this.slots.acquire(
      { sweepId: id, cellId: cell.id },
      {
        signal,
        onWait: (holders) => {
          queued = true;
          const sweeps = [...new Set(holders.map((holder) => holder.sweepId))].join(', ');
          void this.noteStatus(
            id,
            cell.id,
            `queued: all ${cap} trainer slots are taken (TRANSFERLAB_TRAINER_CAP=${cap}; by sweeps ${sweeps})`,
          ).catch(() => undefined);
        },
      },
    );
    if (!slot) return 'interrupted';
    if (queued) await this.updateCell(id, cell.id, (record) => ({ ...record, status: undefined }));
    try {
      return await this.deps.executor.run(cell, { sweepId: id, attempt, signal: AbortSignal.any([signal, slot.lost]) });
    } finally {
      await (this.detaching ? slot.keep() : slot.release());
    }
  }

  private async setCellState(
    id: string,
    cellId: string,
    state: CellState,
    extra: Partial<CellRecord> = {},
  ): Promise<void> {
    await this.updateCell(id, cellId, (record) => ({ ...record, ...extra, state }));
  }

  private async updateCell(
    id: string,
    cellId: string,
    change: (record: CellRecord) => CellRecord,
  ): Promise<CellRecord> {
    const next = await this.mutate<CellRecord>(cellKey(id, cellId), change);
    await this.publish(id, { cellId, cellState: next.state, message: next.error });
    return next;
  }

  private async updateSweep(id: string, change: (record: SweepRecord) => SweepRecord): Promise<SweepRecord> {
    return this.mutate<SweepRecord>(sweepKey(id), (record) => ({ ...change(record), updatedAt: now() }));
  }

  /** Compare-and-set with retries: concurrent writers (two cells finishing at once) never lose an update. */
  private async mutate<T>(key: string, change: (value: T) => T): Promise<T> {
    const kv = await this.kv();
    for (let tries = 0; ; tries++) {
      const current = await kv.getJson<T>(key);
      if (!current) throw new Error(`no ${key} in KV bucket ${SWEEPS_BUCKET}`);
      const next = change(current.value);
      try {
        await kv.updateJson(key, next, current.revision);
        return next;
      } catch (error) {
        if (!(error instanceof RevisionMismatchError) || tries > 20) throw error;
      }
    }
  }

  private async publish(id: string, event: Omit<SweepEvent, 'sweepId' | 'state' | 'counts'>): Promise<void> {
    const current = await this.get(id);
    if (!current) return;
    const payload: SweepEvent = {
      sweepId: id,
      state: current.sweep.state,
      counts: countCells(current.cells),
      ...event,
    };
    this.deps.metrics?.cellCounts(id, payload.counts);
    await this.deps.bus.publish(sweepEventSubject(id), payload);
  }
}
