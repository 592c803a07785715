import { contentId } from './canonical.ts';
import { checkGridLimits } from './spec-limits.ts';
import { armOf, baseArmOf, cellName, parseArm } from './cells.ts';
import type { Arm, Cell, CellKind, Half, MeasureTask, SplitTask, SweepPlan, TransferMode } from './cells.ts';
import type { NetSpec, SweepSpec, TrainingSpec } from './spec.ts';

/**
 * Bumped when the meaning of a cell or split changes, so old results are not reused.
 * 2: each cell draws its own init, dropout and data-order streams; the primary score is test top-1.
 */
const ID_VERSION = 2;

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
  // `views: random` is what an augment without `views` has always meant: the same id.
  if (rest.augment !== false && rest.augment.views === 'random') {
    const { views: _views, ...augment } = rest.augment;
    return { ...rest, augment };
  }
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
  /** only baseB2 has one; absent, the id is the one cells had before measures existed */
  replica?: number | undefined;
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
    replica: identity.replica,
  });
}

/**
 * A measure cell's id: the base nets it reads and how many images and features it uses.
 * `only` is left out: the same measures of the same nets are one cell whatever else runs.
 */
export function measureCellId(task: MeasureTask & { target: Half; seed: number; splitId: string }): string {
  return contentId({
    v: ID_VERSION,
    type: 'measure',
    target: task.target,
    seed: task.seed,
    splitId: task.splitId,
    sourceCellId: task.sourceCellId,
    targetCellId: task.targetCellId,
    replicaCellId: task.replicaCellId,
    examples: task.examples,
    maxFeatures: task.maxFeatures,
    batch: task.batch,
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
  checkGridLimits(spec, plannedCellCount(spec));
  return expandPlan(spec);
}

/**
 * How many cells a spec expands to, counted before anything is expanded for every repeat: one
 * repeat's grid is small (at most a hundred or so cells), and every repeat has the same cells.
 */
export function plannedCellCount(spec: SweepSpec): number {
  return spec.repeats * expandPlan({ ...spec, repeats: 1 }).cells.length;
}

function expandPlan(spec: SweepSpec): SweepPlan {
  const seeds = Array.from({ length: spec.repeats }, (_, i) => i + 1);
  const layers = [...spec.layers].sort((a, b) => a - b);
  const measures = spec.measures;
  // The cheap first look: the base nets and their measures, none of the grid's training.
  const arms = spec.arms.map((arm) => parseArm(arm)).filter((arm) => !measures?.only || arm.kind === 'base');

  const requestedBases = new Set(arms.filter((arm) => arm.kind === 'base').map((arm) => arm.target));
  const neededBases = new Set(requestedBases);
  for (const arm of arms) if (arm.kind === 'transfer' || arm.kind === 'control') neededBases.add(arm.source);
  if (measures) {
    neededBases.add('A');
    neededBases.add('B');
  }
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
    if (measures) {
      // The ceiling needs two nets of one half that differ only in their init (and dropout and
      // order) streams. Repeats cannot serve: with random splits no two repeats share a split.
      const identity = {
        kind: 'base',
        target: 'B',
        seed,
        splitId: split.id,
        net: spec.net,
        training: forBase,
        replica: 2,
      } as const;
      const replicaCellId = cellId(identity);
      baseCells.push({
        id: replicaCellId,
        name: cellName({ arm: 'baseB2', seed }),
        arm: 'baseB2',
        ...identity,
        deps: [],
      });
      const measure: MeasureTask = {
        sourceCellId: baseIds.get('A')!,
        targetCellId: baseIds.get('B')!,
        replicaCellId,
        examples: measures.examples,
        maxFeatures: measures.maxFeatures,
        batch: measures.batch,
      };
      otherCells.push({
        id: measureCellId({ ...measure, target: 'B', seed, splitId: split.id }),
        name: cellName({ arm: 'measureB', seed }),
        arm: 'measureB',
        kind: 'measure',
        seed,
        splitId: split.id,
        target: 'B',
        source: 'A',
        net: spec.net,
        training: forBase,
        measure,
        deps: [measure.sourceCellId, measure.targetCellId, replicaCellId],
      });
    }
    for (const info of arms) {
      if (info.kind === 'base') continue;
      if (info.kind === 'control') {
        // The base net's whole training, then a second budget on the transfer cells' schedule:
        // the same learning-rate history as a `+` cell, with nothing copied from the other half.
        const sourceCellId = baseIds.get(info.source)!;
        const identity = {
          kind: 'control',
          target: info.target,
          source: info.source,
          mode: 'fine-tuned',
          seed,
          splitId: split.id,
          net: spec.net,
          training: spec.training,
          sourceCellId,
        } as const;
        otherCells.push({
          id: cellId(identity),
          name: cellName({ arm: info.arm, seed }),
          arm: info.arm,
          ...identity,
          deps: [sourceCellId],
        });
        continue;
      }
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
