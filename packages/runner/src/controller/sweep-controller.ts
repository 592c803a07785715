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
import { type WatchItem, watchSweep } from './sweep-watch.ts';
import {
  ACTIVE_CELL_STATES,
  type CellRecord,
  type CellState,
  type SweepRecord,
  type SweepState,
  FINAL_CELL_STATES,
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
  /** Cells by state, queue depth, cell durations, scheduling latency and scores; none recorded when absent. */
  metrics?: Pick<SweepMetrics, keyof SweepMetrics>;
  /** The per-cell leases' and trainer slots' timing (tests shorten it). */
  leases?: LeaseOptions;
  /**
   * At most this many trainers at once over every sweep of every controller sharing the KV
   * bucket (TRANSFERLAB_MAX_TRAINERS): slots kept in KV (trainer-slots.ts). Default: no cap
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

/** How many KV reads or writes one sweep's cells issue at once (start, get, resume). */
const KV_BATCH = 256;
/** How often a driver reads its sweep's record again, to see a cancel made elsewhere. */
const SWEEP_REREAD_MS = 1000;

interface Versioned<T> {
  value: T;
  revision: number;
}

/**
 * A sweep as this controller last wrote or read it in KV. KV stays the truth: every write is a
 * compare-and-set against the revision held here, and one that finds a newer revision reads
 * again. It spares the scheduler a read of every cell on every turn and an event a read of
 * every cell for its counts (with 5000 cells, both made a sweep quadratic in its size).
 */
interface SweepView {
  sweep: Versioned<SweepRecord>;
  cells: Map<string, Versioned<CellRecord>>;
  counts: Record<CellState, number>;
  /** Cells not in a final state: the only ones the scheduler looks at. */
  unsettled: Set<string>;
  /** When cells succeeded, as this controller saw it (ms since the epoch): when dependents became ready. */
  succeededAt: Map<string, number>;
  /** When a failed attempt handed a cell back: when it became ready again. */
  retriedAt: Map<string, number>;
  /** When this controller began to drive the sweep, or its splits were ready. */
  since: number;
}

function newView(sweep: Versioned<SweepRecord>, cells: Array<[string, Versioned<CellRecord>]>): SweepView {
  const view: SweepView = {
    sweep,
    cells: new Map(),
    counts: countCells([]),
    unsettled: new Set(),
    succeededAt: new Map(),
    retriedAt: new Map(),
    since: Date.now(),
  };
  for (const [cellId, record] of cells) remember(view, cellId, record);
  return view;
}

/** Keeps a written or read record in the view, unless the view already holds a later one. */
function remember(view: SweepView, cellId: string, next: Versioned<CellRecord>): void {
  const previous = view.cells.get(cellId);
  if (previous && previous.revision >= next.revision) return;
  if (previous) view.counts[previous.value.state] -= 1;
  view.counts[next.value.state] += 1;
  view.cells.set(cellId, next);
  if (FINAL_CELL_STATES.includes(next.value.state)) view.unsettled.delete(cellId);
  else view.unsettled.add(cellId);
  if (next.value.state === 'succeeded' && previous && previous.value.state !== 'succeeded') {
    view.succeededAt.set(cellId, Date.now());
  }
}

async function inBatches<T, R>(items: readonly T[], each: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += KV_BATCH) {
    results.push(...(await Promise.all(items.slice(i, i + KV_BATCH).map(each))));
  }
  return results;
}

/**
 * The Sweeps service's logic: expands a spec into cells, keeps every sweep's and cell's state
 * in the KV bucket, and drives cells through transplant, training and evaluation in
 * dependency order under the sweep's concurrency limit. It holds no state a restart would
 * lose: `resume()` picks up every unfinished sweep from KV.
 */
export class SweepController {
  private kvBucket?: KeyValueStore;
  private readonly drivers = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private readonly views = new Map<string, SweepView>();
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
    const cells = await inBatches(plan.cells, async (cell): Promise<[string, Versioned<CellRecord>]> => {
      await putJson(this.deps.store, cellKeys.cell(cell.id), cell);
      const record: CellRecord = { cell, state: 'pending', attempts: 0 };
      return [cell.id, { value: record, revision: await kv.putJson(cellKey(id, cell.id), record) }];
    });
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
    const revision = await kv.createJson(sweepKey(id), record);
    this.views.set(id, newView({ value: record, revision }, cells));
    if (options.concurrency !== undefined) this.concurrency.set(id, options.concurrency);
    this.drive(id);
    return record;
  }

  async get(id: string): Promise<{ sweep: SweepRecord; cells: CellRecord[] } | undefined> {
    const read = await this.read(id);
    return read && { sweep: read.sweep.value, cells: read.cells.map(([, record]) => record.value) };
  }

  /** The sweep and its cells with their revisions, from KV. */
  private async read(
    id: string,
  ): Promise<{ sweep: Versioned<SweepRecord>; cells: Array<[string, Versioned<CellRecord>]> } | undefined> {
    const kv = await this.kv();
    const sweep = await kv.getJson<SweepRecord>(sweepKey(id));
    if (!sweep) return undefined;
    const found = await inBatches(sweep.value.cellIds, async (cellId) => {
      const record = await kv.getJson<CellRecord>(cellKey(id, cellId));
      return record ? ([cellId, record] as [string, Versioned<CellRecord>]) : undefined;
    });
    return { sweep, cells: found.filter((entry) => entry !== undefined) };
  }

  /** The sweep's view: the one this controller keeps while it drives or changes the sweep, else read from KV. */
  private async view(id: string): Promise<SweepView | undefined> {
    const kept = this.views.get(id);
    if (kept) return kept;
    const read = await this.read(id);
    if (!read) return undefined;
    const view = this.views.get(id) ?? newView(read.sweep, read.cells);
    this.views.set(id, view);
    return view;
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
  /**
   * Cancels a sweep: its driver stops (running cells checkpoint), unfinished cells become
   * cancelled, and `reason`, when given, is recorded as the sweep's error.
   */
  async cancel(id: string, reason = ''): Promise<SweepRecord | undefined> {
    const current = await this.get(id);
    if (!current) return undefined;
    if (isFinalSweep(current.sweep.state)) return current.sweep;
    const cancelled = (record: SweepRecord): SweepRecord => ({
      ...record,
      state: isFinalSweep(record.state) ? record.state : 'cancelled',
      ...(reason ? { error: `cancelled: ${reason}` } : {}),
    });
    await this.updateSweep(id, cancelled);
    this.drivers.get(id)?.abort.abort();
    await this.drivers.get(id)?.done;
    // A driver that was making the splits may have moved the sweep on to running from a record
    // read before the cancel; it has stopped now, so this second write races nobody.
    const sweep = await this.updateSweep(id, cancelled);
    const view = await this.view(id);
    try {
      for (const { value: record } of [...(view?.cells.values() ?? [])]) {
        if (record.state === 'pending' || ACTIVE_CELL_STATES.includes(record.state)) {
          await this.updateCell(id, record.cell.id, (r) => ({ ...r, state: 'cancelled', finishedAt: now() }));
        }
      }
      await this.publish(id, { message: 'cancelled' });
    } finally {
      if (!this.drivers.has(id)) this.views.delete(id);
    }
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
      const view = await this.view(sweep.id);
      for (const { value: record } of [...(view?.cells.values() ?? [])]) {
        if (ACTIVE_CELL_STATES.includes(record.state)) {
          await this.updateCell(sweep.id, record.cell.id, (r) => ({ ...r, state: 'pending' }));
        }
      }
      this.drive(sweep.id);
      resumed.push(sweep.id);
    }
    return resumed;
  }

  /**
   * The sweep as it changes: a snapshot, then each change of a cell or the sweep and each
   * progress report, until the sweep is final or `signal` aborts (sweep-watch.ts).
   */
  watch(id: string, signal: AbortSignal): AsyncGenerator<WatchItem> {
    return watchSweep(
      { bus: this.deps.bus, kv: () => this.kv(), get: (sweepId) => this.get(sweepId), log: this.deps.log },
      id,
      signal,
    );
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
      .finally(() => {
        this.drivers.delete(id);
        this.views.delete(id);
      });
    this.drivers.set(id, { abort, done });
  }

  private async run(id: string, signal: AbortSignal): Promise<void> {
    const view = await this.view(id);
    if (!view) throw new Error(`sweep ${id} not found`);
    const sweep = view.sweep.value;
    this.deps.metrics?.cellCounts(id, view.counts);
    if (sweep.state === 'splitting') {
      const { splits } = expandGrid(sweep.spec);
      for (const task of splits) await this.deps.steps.createSplit(task, { specDir: sweep.specDir, sweepId: id });
      if (signal.aborted) return;
      // Only splitting moves on to running: a cancel that came meanwhile stays a cancel.
      await this.updateSweep(id, (record) => (record.state === 'splitting' ? { ...record, state: 'running' } : record));
      view.since = Date.now();
      await this.publish(id, { message: `${splits.length} split(s) ready` });
    }
    const concurrency =
      this.concurrency.get(id) ?? (sweep.spec.concurrency === 'auto' ? Infinity : sweep.spec.concurrency);
    const kv = await this.kv();
    const running = new Map<string, Promise<void>>();
    // Set when a running cell ends; the loop sleeps only while nothing has ended since its last look.
    let ended = false;
    let wake: () => void = () => undefined;
    // For the scheduling latency, a cell that waited for a free slot was ready only once one was:
    // the wait is the concurrency limit's doing (the queue depth shows it), not the scheduler's.
    let queued = false;
    let firstEndAt = 0;
    // What this driver runs is active, whatever KV says yet (a state write may still be on its
    // way); what it does not run is not, whatever an earlier controller left there.
    const stateOf = (cellId: string): CellState | undefined => {
      if (running.has(cellId)) return 'training';
      const state = view.cells.get(cellId)?.value.state;
      return state && ACTIVE_CELL_STATES.includes(state) ? 'pending' : state;
    };
    let lookedAt = 0;
    // A cell whose bookkeeping failed past the outage bound (KV or the store gone for good) ends
    // the sweep with that error: the other cells stop at their next checkpoint, and starting the
    // sweep again resumes them all.
    let failure: Error | undefined;
    const stopCells = new AbortController();
    const cellSignal = AbortSignal.any([signal, stopCells.signal]);
    for (;;) {
      ended = false;
      const slotAt = queued ? firstEndAt : 0;
      firstEndAt = 0;
      if (signal.aborted || failure) break;
      // A cancel may come through another controller: read the sweep's record (with every cell
      // id, 330 KB at 5000 cells) at most once a second rather than on every turn.
      if (Date.now() - lookedAt >= SWEEP_REREAD_MS) {
        lookedAt = Date.now();
        const latest = await kv.getJson<SweepRecord>(sweepKey(id));
        if (!latest) break;
        if (latest.revision > view.sweep.revision) view.sweep = latest;
      }
      if (isFinalSweep(view.sweep.value.state)) break;
      const candidates: CellRecord[] = [];
      for (const cellId of view.unsettled) if (!running.has(cellId)) candidates.push(view.cells.get(cellId)!.value);
      const { start, block, ready } = schedule(candidates, stateOf, concurrency - running.size);
      this.deps.metrics?.queueDepth(id, ready - start.length);
      queued = ready > start.length;
      for (const cellId of block) {
        await this.updateCell(id, cellId, (r) => ({
          ...r,
          state: 'blocked',
          finishedAt: now(),
          error: 'a cell it depends on failed',
        }));
      }
      for (const cellId of start) {
        const { cell } = view.cells.get(cellId)!.value;
        const readyAt = Math.max(this.readyAt(view, cell), slotAt);
        const { maxAttempts } = view.sweep.value;
        const attributes = { [ATTRIBUTES.cellId]: cell.id, [ATTRIBUTES.cellName]: cell.name };
        const task = withSpan('cell', { attributes }, () =>
          this.runCell(id, cell, { maxAttempts, signal: cellSignal, readyAt }),
        )
          .catch((error: unknown) => {
            failure ??= new Error(`cell ${cell.name} (${cell.id}): ${(error as Error).message}`, { cause: error });
            stopCells.abort();
          })
          .finally(() => {
            running.delete(cellId);
            firstEndAt ||= Date.now();
            ended = true;
            wake();
          });
        running.set(cellId, task);
      }
      if (block.length > 0) continue;
      if (running.size === 0) {
        const counts = view.counts;
        const state: SweepState = counts.failed + counts.blocked > 0 ? 'failed' : 'succeeded';
        await this.updateSweep(id, (record) => ({ ...record, state }));
        await this.publish(id, { message: `sweep ${state}` });
        this.deps.metrics?.sweepFinished(id);
        break;
      }
      if (!ended) await new Promise<void>((resolve) => (wake = resolve));
    }
    await Promise.allSettled(running.values());
    if (failure) throw failure;
  }

  /** When the cell became ready to run: its last dependency succeeded, its last attempt failed, or the sweep began. */
  private readyAt(view: SweepView, cell: Cell): number {
    let at = view.retriedAt.get(cell.id) ?? view.since;
    for (const dep of cell.deps) at = Math.max(at, view.succeededAt.get(dep) ?? view.since);
    return at;
  }

  /** One cell through its steps, with retries that resume from the cell's checkpoint. */
  private async runCell(id: string, cell: Cell, options: LaunchOptions): Promise<void> {
    const { signal } = options;
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
      await this.runLeasedCell(id, cell, { ...options, signal: AbortSignal.any([signal, lease.lost]) });
    } finally {
      await (this.detaching ? lease.keep() : lease.release());
    }
  }

  private async runLeasedCell(id: string, cell: Cell, options: LaunchOptions): Promise<void> {
    const { maxAttempts, signal } = options;
    // The attempt is counted in the same write as the cell's first state, one KV write fewer per cell.
    const first: CellState =
      cell.kind === 'measure' ? 'evaluating' : cell.kind === 'base' ? 'training' : 'transplanting';
    const { attempts: attempt, startedAt } = await this.updateCell(id, cell.id, (r) => ({
      ...r,
      state: first,
      attempts: r.attempts + 1,
      // A new attempt: what the executor said about the last one no longer holds.
      status: undefined,
      startedAt: r.startedAt ?? now(),
    }));
    const seconds = (): number => (Date.now() - Date.parse(startedAt ?? now())) / 1000;
    const launched = (): void => this.deps.metrics?.cellLaunched(id, (Date.now() - options.readyAt) / 1000);
    try {
      if (cell.kind === 'measure') {
        // Nothing to train: its base nets are its dependencies, and the evaluator measures them.
        launched();
        await this.deps.steps.measure(cell, { sweepId: id });
        await this.setCellState(id, cell.id, 'succeeded', { finishedAt: now(), error: undefined });
        this.deps.metrics?.cellFinished(id, cell, 'succeeded', seconds());
        return;
      }
      if (cell.kind !== 'base') {
        await this.deps.steps.transplant(cell, { sweepId: id });
        await this.setCellState(id, cell.id, 'training');
      }
      launched();
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
      if (!final) this.views.get(id)?.retriedAt.set(cell.id, Date.now());
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
            `queued: all ${cap} trainer slots are taken (TRANSFERLAB_MAX_TRAINERS=${cap}; by sweeps ${sweeps})`,
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
    const view = this.views.get(id);
    const next = await this.mutate<CellRecord>(cellKey(id, cellId), change, view?.cells.get(cellId));
    if (view) remember(view, cellId, next);
    await this.publish(id, { cellId, cellState: next.value.state, message: next.value.error });
    return next.value;
  }

  private async updateSweep(id: string, change: (record: SweepRecord) => SweepRecord): Promise<SweepRecord> {
    const view = this.views.get(id);
    const next = await this.mutate<SweepRecord>(
      sweepKey(id),
      (record) => ({ ...change(record), updatedAt: now() }),
      view?.sweep,
    );
    if (view && next.revision > view.sweep.revision) view.sweep = next;
    return next.value;
  }

  /**
   * Compare-and-set with retries: concurrent writers (two cells finishing at once) never lose an
   * update. Starts from the revision the caller holds, when it holds one, and reads only when
   * that turns out stale.
   */
  private async mutate<T>(key: string, change: (value: T) => T, held?: Versioned<T>): Promise<Versioned<T>> {
    const kv = await this.kv();
    let current = held ?? (await kv.getJson<T>(key));
    for (let tries = 0; ; tries++) {
      if (!current) throw new Error(`no ${key} in KV bucket ${SWEEPS_BUCKET}`);
      const next = change(current.value);
      try {
        return { value: next, revision: await kv.updateJson(key, next, current.revision) };
      } catch (error) {
        if (!(error instanceof RevisionMismatchError) || tries > 20) throw error;
        current = await kv.getJson<T>(key);
      }
    }
  }

  private async publish(id: string, event: Omit<SweepEvent, 'sweepId' | 'state' | 'counts'>): Promise<void> {
    const view = this.views.get(id);
    let state: SweepState;
    let counts: Record<CellState, number>;
    if (view) {
      state = view.sweep.value.state;
      counts = { ...view.counts };
    } else {
      const current = await this.get(id);
      if (!current) return;
      state = current.sweep.state;
      counts = countCells(current.cells);
    }
    const payload: SweepEvent = { sweepId: id, state, counts, ...event };
    this.deps.metrics?.cellCounts(id, payload.counts);
    await this.deps.bus.publish(sweepEventSubject(id), payload);
  }
}

interface LaunchOptions {
  maxAttempts: number;
  signal: AbortSignal;
  /** When the cell became ready to run (ms since the epoch), for the scheduling latency. */
  readyAt: number;
}
