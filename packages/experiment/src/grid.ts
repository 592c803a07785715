import { contentId } from './canonical.ts';
import { checkGridLimits } from './spec-limits.ts';
import { armOf, baseArmOf, cellName, parseArm } from './cells.ts';
import type { Arm, Cell, CellKind, Half, SplitTask, SweepPlan, TransferMode } from './cells.ts';
import type { NetSpec, SweepSpec, TrainingSpec } from './spec.ts';

/** Bumped when the meaning of a cell or split changes, so old results are not reused. */
const ID_VERSION = 1;

export function splitId(task: Omit<SplitTask, 'id'>): string {
  return contentId({
    v: ID_VERSION,
    type: 'split',
    dataset: task.dataset,
    split: task.split,
    // Named groups are the same split whatever the repeat; only a random split draws on the seed.
    seed: task.split.kind === 'random' ? task.seed : undefined,
  });
}

/**
 * The fields of `training` that can change what a cell learns. `scoreTopK` only changes how
 * the validation history is summarised (the report recomputes it), and a checkpoint interval
 * only changes where a resumed run restarts from; neither should make a finished cell stale.
 */
export function trainingForId(training: TrainingSpec): Omit<TrainingSpec, 'scoreTopK' | 'checkpointEveryEpochs'> {
  const { scoreTopK: _score, checkpointEveryEpochs: _checkpoint, ...rest } = training;
  return rest;
}

export interface CellIdentity {
  kind: CellKind;
  target: Half;
  source?: Half | undefined;
  n?: number | undefined;
  mode?: TransferMode | undefined;
  seed: number;
  splitId: string;
  net: NetSpec;
  training: TrainingSpec;
  sourceCellId?: string | undefined;
}

/** The hash of everything that determines a cell's result, and nothing else. */
export function cellId(identity: CellIdentity): string {
  return contentId({
    v: ID_VERSION,
    type: 'cell',
    kind: identity.kind,
    target: identity.target,
    source: identity.source,
    n: identity.n,
    mode: identity.mode,
    seed: identity.seed,
    splitId: identity.splitId,
    net: identity.net,
    training: trainingForId(identity.training),
    sourceCellId: identity.sourceCellId,
  });
}

/** `training` with the `base` overrides on top: what base cells train with. */
export function baseTraining(spec: SweepSpec): TrainingSpec {
  const overrides = Object.fromEntries(Object.entries(spec.base).filter(([, value]) => value !== undefined));
  return { ...spec.training, ...overrides };
}

/**
 * The sweep as a DAG: splits, then base cells, then the transfer and random cells that copy
 * from (or sit beside) them. Cells come out in a topological order.
 */
export function expandGrid(spec: SweepSpec): SweepPlan {
  checkGridLimits(spec);
  const seeds = Array.from({ length: spec.repeats }, (_, i) => i + 1);
  const layers = [...spec.layers].sort((a, b) => a - b);
  const arms = spec.arms.map((arm) => parseArm(arm));

  const requestedBases = new Set(arms.filter((arm) => arm.kind === 'base').map((arm) => arm.target));
  const neededBases = new Set(requestedBases);
  for (const arm of arms) if (arm.kind === 'transfer') neededBases.add(arm.source);
  const baseHalves = (['A', 'B'] as const).filter((half) => neededBases.has(half));

  const splits = new Map<string, SplitTask>();
  const splitFor = (seed: number): SplitTask => {
    const task = { seed: spec.split.kind === 'random' ? seed : 1, dataset: spec.dataset, split: spec.split };
    const id = splitId(task);
    const existing = splits.get(id);
    if (existing) return existing;
    const created = { id, ...task };
    splits.set(id, created);
    return created;
  };

  const forBase = baseTraining(spec);
  const baseCells: Cell[] = [];
  const otherCells: Cell[] = [];
  for (const seed of seeds) {
    const split = splitFor(seed);
    const baseIds = new Map<Half, string>();
    for (const half of baseHalves) {
      const arm = baseArmOf(half);
      const identity = {
        kind: 'base',
        target: half,
        seed,
        splitId: split.id,
        net: spec.net,
        training: forBase,
      } as const;
      const id = cellId(identity);
      baseIds.set(half, id);
      baseCells.push({
        id,
        name: cellName({ arm, seed }),
        arm,
        ...identity,
        deps: [],
        ...(requestedBases.has(half) ? {} : { implicit: true as const }),
      });
    }
    for (const info of arms) {
      if (info.kind === 'base') continue;
      for (const n of layers) {
        const sourceCellId = info.kind === 'transfer' ? baseIds.get(info.source) : undefined;
        const identity = {
          kind: info.kind,
          target: info.target,
          ...(info.kind === 'transfer' ? { source: info.source } : {}),
          n,
          mode: info.mode,
          seed,
          splitId: split.id,
          net: spec.net,
          training: spec.training,
          ...(sourceCellId ? { sourceCellId } : {}),
        };
        const arm: Arm = armOf(identity);
        otherCells.push({
          id: cellId(identity),
          name: cellName({ arm, n, seed }),
          arm,
          ...identity,
          deps: sourceCellId ? [sourceCellId] : [],
        });
      }
    }
  }
  return { splits: [...splits.values()], cells: [...baseCells, ...otherCells] };
}

/** Null when every cell's deps exist and come before it; otherwise what is wrong. */
export function planOrderProblem(plan: SweepPlan): string | null {
  const seen = new Set<string>();
  const splitIds = new Set(plan.splits.map((split) => split.id));
  for (const cell of plan.cells) {
    if (seen.has(cell.id)) return `${cell.name}: duplicate id ${cell.id}`;
    if (!splitIds.has(cell.splitId)) return `${cell.name}: unknown split ${cell.splitId}`;
    for (const dep of cell.deps)
      if (!seen.has(dep)) return `${cell.name}: depends on ${dep}, which does not come before it`;
    seen.add(cell.id);
  }
  return null;
}
