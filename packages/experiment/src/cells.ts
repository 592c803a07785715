import type { NetSpec, SweepDataset, SweepSplit, TrainingSpec } from './spec.ts';

export type Half = 'A' | 'B';
/**
 * `control`: the equal-budget control, a base net trained on for a second budget on its own
 * half (all 8 layers kept, fine-tuned), so that it has had exactly the training of a `+` cell.
 */
export type CellKind = 'base' | 'transfer' | 'random' | 'control' | 'measure';
export type TransferMode = 'frozen' | 'fine-tuned';

/** Figure 2's lines, in the order the paper introduces them (B as target first). */
export const ALL_ARMS = [
  'baseA',
  'baseB',
  'BnB',
  'BnB+',
  'AnB',
  'AnB+',
  'AnA',
  'AnA+',
  'BnA',
  'BnA+',
  'RnB',
  'RnA',
  'controlB',
  'controlA',
] as const;
/**
 * Cells that only the cheap measures add (spec `measures`), never a line of Figure 2 and never
 * listed in a spec's arms: `baseB2`, a second base net on B with its own init stream (the
 * ceiling of CKA between two nets of one half), and `measureB`, the cell that computes CKA and
 * LogME per layer from the base nets.
 */
export const MEASURE_ARMS = ['baseB2', 'measureB'] as const;
export type Arm = (typeof ALL_ARMS)[number] | (typeof MEASURE_ARMS)[number];

export type ArmInfo =
  | { arm: Arm; kind: 'base'; target: Half }
  | { arm: Arm; kind: 'transfer'; target: Half; source: Half; mode: TransferMode }
  | { arm: Arm; kind: 'random'; target: Half; mode: 'frozen' }
  | { arm: Arm; kind: 'control'; target: Half; source: Half; mode: 'fine-tuned' };

export function isArm(text: string): text is Arm {
  return (ALL_ARMS as readonly string[]).includes(text);
}

/** `AnB+` -> copied from baseA, trained on B, fine-tuned; `RnB` -> random frozen layers, target B. */
export function parseArm(text: string): ArmInfo {
  if (!isArm(text)) throw new Error(`unknown arm '${text}' (expected one of ${ALL_ARMS.join(', ')})`);
  const base = /^base([AB])$/.exec(text);
  if (base) return { arm: text, kind: 'base', target: base[1] as Half };
  const control = /^control([AB])$/.exec(text);
  if (control) {
    const half = control[1] as Half;
    return { arm: text, kind: 'control', target: half, source: half, mode: 'fine-tuned' };
  }
  const random = /^Rn([AB])$/.exec(text);
  if (random) return { arm: text, kind: 'random', target: random[1] as Half, mode: 'frozen' };
  const transfer = /^([AB])n([AB])(\+?)$/.exec(text);
  if (!transfer) throw new Error(`arm '${text}' has no parse`);
  return {
    arm: text,
    kind: 'transfer',
    source: transfer[1] as Half,
    target: transfer[2] as Half,
    mode: transfer[3] === '+' ? 'fine-tuned' : 'frozen',
  };
}

/** The inverse of parseArm, for anything shaped like a cell. */
export function armOf(cell: {
  kind: CellKind;
  target: Half;
  source?: Half | undefined;
  mode?: TransferMode | undefined;
}): Arm {
  let text: string;
  if (cell.kind === 'base') text = `base${cell.target}`;
  else if (cell.kind === 'control') text = `control${cell.target}`;
  else if (cell.kind === 'random') text = `Rn${cell.target}`;
  else if (cell.kind === 'measure') text = `measure${cell.target}`;
  else {
    if (!cell.source) throw new Error('armOf: a transfer cell needs a source half');
    text = `${cell.source}n${cell.target}${cell.mode === 'fine-tuned' ? '+' : ''}`;
  }
  if (!isArm(text) && !(MEASURE_ARMS as readonly string[]).includes(text))
    throw new Error(`armOf: no arm for ${JSON.stringify(cell)}`);
  return text as Arm;
}

/** Base and control arms have no n: one value per repeat, drawn as a band across every n. */
export function isBandArm(arm: Arm): boolean {
  return arm.startsWith('base') || arm.startsWith('control');
}

export function baseArmOf(half: Half): Arm {
  return half === 'A' ? 'baseA' : 'baseB';
}

export function otherHalf(half: Half): Half {
  return half === 'A' ? 'B' : 'A';
}

/** The paper's printed name: `baseB seed=1`, `AnB+ n=3 seed=1`, `RnB n=2 seed=1`. */
export function cellName(cell: { arm: Arm; n?: number | undefined; seed: number }): string {
  return cell.n === undefined ? `${cell.arm} seed=${cell.seed}` : `${cell.arm} n=${cell.n} seed=${cell.seed}`;
}

/** One split of the dataset's classes into halves A and B; content-addressed. */
export interface SplitTask {
  id: string;
  /** The random split's seed; for named groups every repeat shares one split, with seed 1. */
  seed: number;
  dataset: SweepDataset;
  split: SweepSplit;
}

/** One training run. */
export interface Cell {
  id: string;
  name: string;
  arm: Arm;
  kind: CellKind;
  seed: number;
  splitId: string;
  target: Half;
  /** transfer and control cells: the half whose base net the layers come from */
  source?: Half;
  /** transfer and random cells: how many of the 8 learned layers are copied (or random) */
  n?: number;
  mode?: TransferMode;
  /** transfer and control cells: the base cell whose checkpoint is transplanted */
  sourceCellId?: string;
  net: NetSpec;
  /** effective hyper-parameters: for base cells, `training` with `base` applied */
  training: TrainingSpec;
  deps: string[];
  /** a base cell added only because a requested transfer arm copies from it */
  implicit?: true;
  /** baseB2: the second net of its half (replica 2), so its id differs from baseB's */
  replica?: number;
  /** measure cells: the base nets measured, and how */
  measure?: MeasureTask;
}

/** What a measure cell computes from: base nets of one repeat, on the target half's test images. */
export interface MeasureTask {
  /** the net whose layers are compared with the target's and scored by LogME on its labels */
  sourceCellId: string;
  /** the target half's own base net */
  targetCellId: string;
  /** a second base net of the target half with another init stream: the CKA ceiling */
  replicaCellId: string;
  examples: number;
  maxFeatures: number;
  batch: number;
}

export interface SweepPlan {
  splits: SplitTask[];
  /** topologically ordered: every cell comes after the cells in its deps */
  cells: Cell[];
}
