/**
 * What a watcher of one sweep sees: a snapshot, then every change of the sweep and its cells,
 * and every progress report, as the controller publishes them on the bus. The controller owns
 * this (SweepController.watch); the gRPC server only maps each item to the wire.
 */
import {
  type Bus,
  type BusMessage,
  type KeyValueStore,
  PoisonMessageError,
  type Subscription,
  cellKey,
  cellProgressFilter,
  sweepEventSubject,
  sweepKey,
} from '@transferlab/platform';
import type { CellProgress } from '../train-cell.ts';
import { type CellRecord, type CellState, type SweepRecord, FINAL_CELL_STATES, isFinalSweep } from './records.ts';
import type { SweepEvent } from './sweep-controller.ts';

export type WatchItem =
  | { kind: 'snapshot'; sweep: SweepRecord; cells: CellRecord[] }
  /** A cell changed; `stateOf` gives every cell's state as the watch knows it (its dependencies'). */
  | { kind: 'cell'; record: CellRecord; stateOf: (cellId: string) => CellState | undefined }
  | { kind: 'sweep'; sweep: SweepRecord; cells: CellRecord[] }
  | { kind: 'progress'; cellId: string; report: CellProgress; time: Date };

export interface WatchDeps {
  bus: Bus;
  kv: () => Promise<KeyValueStore>;
  get: (id: string) => Promise<{ sweep: SweepRecord; cells: CellRecord[] } | undefined>;
  log?: (message: string, fields?: Record<string, unknown>) => void;
}

/** After an event puts the sweep in a final state, how long a watch waits for the closing sweep event. */
const FINAL_GRACE_MS = 5000;
const SWEEP_STATES: readonly string[] = ['splitting', 'running', 'succeeded', 'failed', 'cancelled'];

type Queued = { kind: 'event'; event: SweepEvent } | { kind: 'progress'; cellId: string; message: BusMessage };

/**
 * Subscribes before it reads the snapshot, so nothing falls in between (an event may then repeat
 * what the snapshot shows, which is harmless). Ends when the sweep is final, or when `signal`
 * aborts; yields nothing for a sweep that does not exist.
 */
export async function* watchSweep(deps: WatchDeps, id: string, signal: AbortSignal): AsyncGenerator<WatchItem> {
  const queue: Queued[] = [];
  let wake: (() => void) | undefined;
  let stopped = signal.aborted;
  const push = (item: Queued): void => {
    queue.push(item);
    wake?.();
  };
  const stop = (): void => {
    stopped = true;
    wake?.();
  };
  signal.addEventListener('abort', stop);
  const subscriptions: Subscription[] = [];
  let finalTimer: NodeJS.Timeout | undefined;
  try {
    subscriptions.push(
      await deps.bus.subscribe(sweepEventSubject(id), (message) =>
        push({ kind: 'event', event: sweepEventOf(message) }),
      ),
      await deps.bus.subscribe(cellProgressFilter(id), (message) =>
        push({ kind: 'progress', cellId: message.subject.split('.').pop()!, message }),
      ),
    );
    const snapshot = await deps.get(id);
    if (!snapshot || stopped) return;
    let sweep = snapshot.sweep;
    const records = new Map(snapshot.cells.map((record) => [record.cell.id, record]));
    const stateOf = (cellId: string): CellState | undefined => records.get(cellId)?.state;
    const allCellsFinal = (): boolean => [...records.values()].every((r) => FINAL_CELL_STATES.includes(r.state));
    yield { kind: 'snapshot', sweep, cells: [...records.values()] };
    if (isFinalSweep(sweep.state)) return;

    while (!stopped) {
      const item = queue.shift();
      if (!item) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      if (item.kind === 'progress') {
        try {
          const report = item.message.json<CellProgress & { time?: string }>();
          yield {
            kind: 'progress',
            cellId: item.cellId,
            report,
            time: report.time ? new Date(report.time) : new Date(),
          };
        } catch (error) {
          // A malformed report loses one bar update, not the watch.
          deps.log?.('skipped a progress report', { err: error, sweepId: id, subject: item.message.subject });
        }
        continue;
      }
      const { event } = item;
      const kv = await deps.kv();
      if (event.cellId && records.has(event.cellId)) {
        const record = (await kv.getJson<CellRecord>(cellKey(id, event.cellId)))?.value;
        if (record) {
          records.set(event.cellId, record);
          yield { kind: 'cell', record, stateOf };
        }
      }
      if (event.state !== sweep.state || !event.cellId) {
        sweep = (await kv.getJson<SweepRecord>(sweepKey(id)))?.value ?? { ...sweep, state: event.state };
      }
      yield { kind: 'sweep', sweep: { ...sweep, state: event.state }, cells: [...records.values()] };
      if (isFinalSweep(event.state)) {
        // The controller closes a sweep with an event that names no cell; cells it stops on
        // cancel come just before. Do not wait forever for a closing event that was missed.
        if (!event.cellId || allCellsFinal()) break;
        finalTimer ??= setTimeout(stop, FINAL_GRACE_MS);
      }
    }
  } finally {
    clearTimeout(finalTimer);
    signal.removeEventListener('abort', stop);
    for (const subscription of subscriptions) await subscription.unsubscribe().catch(() => undefined);
  }
}

/**
 * A sweep event as the controller publishes it, or a PoisonMessageError (the bus sets the
 * message aside) naming the wrong field, never its value: a stray message on the subject costs
 * itself, not the watch.
 */
export function sweepEventOf(message: BusMessage): SweepEvent {
  const event = message.json<unknown>();
  const where = `sweep event ${message.seq} on ${message.subject}`;
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    throw new PoisonMessageError(`${where}: not a JSON object`);
  }
  const { state, cellId, cellState } = event as Record<string, unknown>;
  if (typeof state !== 'string' || !SWEEP_STATES.includes(state)) {
    throw new PoisonMessageError(`${where}: state must be a sweep state`);
  }
  if (cellId !== undefined && typeof cellId !== 'string')
    throw new PoisonMessageError(`${where}: cellId must be a string`);
  if (cellState !== undefined && typeof cellState !== 'string') {
    throw new PoisonMessageError(`${where}: cellState must be a string`);
  }
  return event as SweepEvent;
}
