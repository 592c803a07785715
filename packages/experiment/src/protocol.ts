import { canonicalJson } from './canonical.ts';
import type { SweepSpec } from './spec.ts';

/**
 * Why a dissimilar-split sweep cannot be set against a random-split one, as field paths; empty
 * when it can. The paper's dissimilar-split finding compares two transfer drops, so the two
 * sweeps must differ in which classes form the halves and in nothing that moves accuracy: a
 * drop measured after 10 epochs says nothing against one measured after 30.
 */
export function splitComparisonProblems(dissimilar: SweepSpec, random: SweepSpec): string[] {
  const problems: string[] = [];
  if (dissimilar.split.kind !== 'groups') {
    problems.push(`split.kind: this sweep's is '${dissimilar.split.kind}', not a dissimilar ('groups') split`);
  }
  if (random.split.kind !== 'random') {
    problems.push(`split.kind: the random-split sweep's is '${random.split.kind}', not 'random'`);
  }
  const { kind: _k1, groups: _g1, groupsFile: _f1, ...dissimilarSizes } = dissimilar.split;
  const { kind: _k2, groups: _g2, groupsFile: _f2, ...randomSizes } = random.split;
  const same = {
    dataset: [dissimilar.dataset, random.dataset],
    split: [dissimilarSizes, randomSizes],
    net: [dissimilar.net, random.net],
    training: [dissimilar.training, random.training],
    base: [dissimilar.base, random.base],
  } as const;
  for (const [field, [here, there]] of Object.entries(same)) {
    for (const leaf of differingLeaves(here, there, field)) {
      problems.push(`${leaf.path}: ${show(leaf.here)} here, ${show(leaf.there)} in the random-split sweep`);
    }
  }
  const missing = dissimilar.layers.filter((n) => !random.layers.includes(n));
  if (missing.length > 0) problems.push(`layers: the random-split sweep has no n = ${missing.join(', ')}`);
  return problems;
}

interface Leaf {
  path: string;
  here: unknown;
  there: unknown;
}

function differingLeaves(here: unknown, there: unknown, path: string): Leaf[] {
  if (isRecord(here) && isRecord(there)) {
    const keys = [...new Set([...Object.keys(here), ...Object.keys(there)])].sort();
    return keys.flatMap((key) => differingLeaves(here[key], there[key], `${path}.${key}`));
  }
  return canonicalJson(here ?? null) === canonicalJson(there ?? null) ? [] : [{ path, here, there }];
}

function show(value: unknown): string {
  return value === undefined ? 'unset' : canonicalJson(value);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
