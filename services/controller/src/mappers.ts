/**
 * The controller's records (KV) as SweepService messages. Cells, results, progress and specs
 * go through the shared mappers of `@transferlab/proto/mappers`; this file adds only what is
 * the controller's own: sweep and cell states, counts, and the report's per-arm table.
 */
import { type Aggregate, type Cell as DomainCell, expandGrid } from '@transferlab/experiment';
import {
  type Cell,
  CellState,
  type CellStateCount,
  type ArmRow,
  type Progress,
  type Sweep,
  SweepState,
  type CellResult,
} from '@transferlab/proto';
import {
  armToProto,
  cellKindToProto,
  cellToProto,
  halfToProto,
  sweepSpecToProto,
  transferModeToProto,
} from '@transferlab/proto/mappers';
import type { SweepSpecInput } from '@transferlab/experiment';
import type {
  CellRecord,
  CellState as DomainCellState,
  SweepState as DomainSweepState,
  SweepRecord,
} from '@transferlab/runner/controller/records';

const SWEEP_STATES: Record<DomainSweepState, SweepState> = {
  splitting: SweepState.SWEEP_STATE_PENDING,
  running: SweepState.SWEEP_STATE_RUNNING,
  succeeded: SweepState.SWEEP_STATE_SUCCEEDED,
  failed: SweepState.SWEEP_STATE_FAILED,
  cancelled: SweepState.SWEEP_STATE_CANCELLED,
};

export function sweepStateToProto(state: DomainSweepState): SweepState {
  return SWEEP_STATES[state];
}

/** The controller's states a ListSweeps filter asks for (CANCELLING has none: cancel is immediate here). */
export function sweepStatesFromProto(states: readonly SweepState[]): Set<DomainSweepState> {
  const wanted = new Set<DomainSweepState>();
  for (const [domain, proto] of Object.entries(SWEEP_STATES) as [DomainSweepState, SweepState][]) {
    if (states.includes(proto)) wanted.add(domain);
  }
  return wanted;
}

/**
 * A cell's state as the proto names it: the three active states are RUNNING, a finished cell
 * found in the store is REUSED, and a pending cell whose dependencies all succeeded is READY.
 */
export function cellStateToProto(
  record: Pick<CellRecord, 'state' | 'reused' | 'cell'>,
  stateOf: (cellId: string) => DomainCellState | undefined,
): CellState {
  switch (record.state) {
    case 'pending':
      return record.cell.deps.every((dep) => stateOf(dep) === 'succeeded')
        ? CellState.CELL_STATE_READY
        : CellState.CELL_STATE_PENDING;
    case 'transplanting':
    case 'training':
    case 'evaluating':
      return CellState.CELL_STATE_RUNNING;
    case 'succeeded':
      return record.reused ? CellState.CELL_STATE_REUSED : CellState.CELL_STATE_SUCCEEDED;
    case 'failed':
      return CellState.CELL_STATE_FAILED;
    case 'blocked':
      return CellState.CELL_STATE_BLOCKED;
    case 'cancelled':
      return CellState.CELL_STATE_CANCELLED;
  }
}

export function cellRecordToProto(
  record: CellRecord,
  stateOf: (cellId: string) => DomainCellState | undefined,
  extra: { result?: CellResult; progress?: Progress } = {},
): Cell {
  return cellToProto(record.cell, {
    state: cellStateToProto(record, stateOf),
    attempts: record.attempts,
    error: record.error,
    status: record.status,
    result: extra.result,
    progress: extra.progress,
  });
}

/** A cell of a plan that has no record yet (StartSweep with validate_only). */
export function plannedCellToProto(cell: DomainCell): Cell {
  return cellToProto(cell, { state: CellState.CELL_STATE_PENDING });
}

export function countsToProto(cells: readonly Cell[]): CellStateCount[] {
  const counts = new Map<CellState, number>();
  for (const cell of cells) counts.set(cell.state, (counts.get(cell.state) ?? 0) + 1);
  return Object.values(CellState)
    .filter((state) => counts.has(state))
    .map((state) => ({ state, count: counts.get(state)! }));
}

export function sweepToProto(sweep: SweepRecord, cells: readonly Cell[], options: { specText?: string } = {}): Sweep {
  const final = sweep.state === 'succeeded' || sweep.state === 'failed' || sweep.state === 'cancelled';
  const splitIds = [...new Set(expandGrid(sweep.spec).splits.map((split) => split.id))];
  return {
    id: sweep.id,
    name: sweep.name,
    spec: sweepSpecToProto(sweep.spec as SweepSpecInput),
    specText: options.specText ?? sweep.specText ?? '',
    state: sweepStateToProto(sweep.state),
    counts: countsToProto(cells),
    totalCells: sweep.cellIds.length,
    splitIds,
    createdAt: new Date(sweep.createdAt),
    updatedAt: new Date(sweep.updatedAt),
    finishedAt: final ? new Date(sweep.updatedAt) : undefined,
    error: sweep.error ?? '',
  };
}

/** The per-arm table of a report (as `arms.csv`): base bands first, then one row per arm and n. */
export function armRowsToProto(agg: Aggregate): ArmRow[] {
  const optional = (value: number | null): number | undefined =>
    value === null || !Number.isFinite(value) ? undefined : value;
  const bands: ArmRow[] = agg.bases.map((band) => ({
    arm: armToProto(band.arm),
    kind: cellKindToProto('base'),
    target: halfToProto(band.target),
    source: halfToProto(undefined),
    mode: transferModeToProto(undefined),
    n: undefined,
    mean: band.count > 0 ? optional(band.mean) : undefined,
    ci95: optional(band.ci95),
    sd: optional(band.sd),
    min: band.count > 0 ? optional(band.min) : undefined,
    max: band.count > 0 ? optional(band.max) : undefined,
    count: band.count,
    seeds: [...band.seeds],
    values: [...band.values],
    implicit: band.implicit,
  }));
  const points: ArmRow[] = agg.points.map((point) => ({
    arm: armToProto(point.arm),
    kind: cellKindToProto(point.kind),
    target: halfToProto(point.target),
    source: halfToProto(point.source),
    mode: transferModeToProto(point.mode),
    n: point.n,
    mean: point.count > 0 ? optional(point.mean) : undefined,
    ci95: optional(point.ci95),
    sd: optional(point.sd),
    min: point.count > 0 ? optional(point.min) : undefined,
    max: point.count > 0 ? optional(point.max) : undefined,
    count: point.count,
    seeds: [...point.seeds],
    values: [...point.values],
    implicit: false,
  }));
  return [...bands, ...points];
}
