/**
 * The evaluator's own mappers: scores (a stored result, or the nn evaluation of a subset) as
 * the proto's Evaluation, with per-class image counts from the split's manifest.
 */
import type { Half as DomainHalf } from '@transferlab/experiment';
import { Subset } from '@transferlab/proto';
import type { Evaluation } from '@transferlab/proto';
import { halfToProto } from '@transferlab/proto/mappers';

export type SubsetName = 'train' | 'val' | 'test';

const SUBSETS: Record<SubsetName, Subset> = {
  train: Subset.SUBSET_TRAIN,
  val: Subset.SUBSET_VAL,
  test: Subset.SUBSET_TEST,
};

/** SUBSET_UNSPECIFIED is TEST, as the proto says; undefined for a value with no meaning. */
export function subsetFromProto(subset: Subset): SubsetName | undefined {
  if (subset === Subset.SUBSET_UNSPECIFIED) return 'test';
  return (Object.keys(SUBSETS) as SubsetName[]).find((name) => SUBSETS[name] === subset);
}

export function subsetToProto(subset: SubsetName): Subset {
  return SUBSETS[subset];
}

/** What the scores are of: a cell's net on one subset of its target half. */
export interface EvaluationTarget {
  cellId: string;
  half: DomainHalf;
  subset: SubsetName;
  /** The half's class names, in label order, and the subset's images per class (the manifest's). */
  classes: readonly string[];
  perClassCounts: readonly number[];
}

/**
 * Scores as an Evaluation. `perClassTop1` is by class index; a class with no images (NaN, or
 * a zero count) has no top-1.
 */
export function evaluationToProto(
  target: EvaluationTarget,
  scores: { top1: number; top5: number; perClassTop1: readonly number[] },
): Evaluation {
  return {
    cellId: target.cellId,
    half: halfToProto(target.half),
    subset: subsetToProto(target.subset),
    top1: scores.top1,
    top5: scores.top5,
    count: target.perClassCounts.reduce((sum, count) => sum + count, 0),
    perClass: target.classes.map((className, i) => {
      const count = target.perClassCounts[i] ?? 0;
      const top1 = scores.perClassTop1[i];
      return { className, count, top1: count > 0 && top1 !== undefined && Number.isFinite(top1) ? top1 : undefined };
    }),
  };
}
