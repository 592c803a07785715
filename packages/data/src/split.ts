/**
 * Splits: which classes go to half A and half B, and which images of each class go to a
 * half's train, val and test subsets. Everything is a pure function of the dataset and the
 * spec, so the same inputs always give the same split (and the same content-addressed id).
 */
import { createHash } from 'node:crypto';
import { YAMLParseError, parse as parseYaml } from 'yaml';
import type { Dataset, Subset } from './dataset.ts';
import { DataError } from './errors.ts';
import { deriveRng, permutation, shuffleInPlace } from './prng.ts';

export type HalfName = 'A' | 'B';
export type SubsetName = 'train' | 'val' | 'test';
export const HALVES: readonly HalfName[] = ['A', 'B'];
export const SUBSETS: readonly SubsetName[] = ['train', 'val', 'test'];

export interface SplitCaps {
  /** Keep at most this many train images per class (after val, and test if carved, are taken). */
  trainPerClass?: number;
  /** Validation images carved from each class's train images. */
  valPerClass: number;
  /**
   * At most this many test images per class. When the dataset has no test subset, test is
   * carved from train after val, and this defaults to valPerClass.
   */
  testPerClass?: number;
}

export interface ClassGroups {
  A: string[];
  B: string[];
}

/**
 * `seed` drives the class shuffle (random) and, in both kinds, which images are carved
 * into val/test and the order they are stored in. Groups default to seed 0.
 */
export type SplitSpec =
  | { kind: 'random'; seed: number; caps: SplitCaps }
  | { kind: 'groups'; groups: ClassGroups; seed?: number; caps: SplitCaps };

export interface HalfPlan {
  /** Class names, sorted by their label in the dataset; the index is the half-local label. */
  classes: string[];
  /** The dataset label of each class, same order. */
  sourceLabels: number[];
  /** Where each class came from in the spec, for error messages (e.g. `split.groups.B[2]`). */
  specPaths: string[];
}

export interface SplitPlan {
  spec: SplitSpec;
  /** The dataset's classes the plan was made for. */
  datasetClasses: string[];
  seed: number;
  halves: Record<HalfName, HalfPlan>;
}

/** A spec problem; the message starts with the field path, e.g. `split.groups.B[2]: unknown class 'zebra'`. */
export class SplitError extends Error {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super(`${path}: ${problem}`);
    this.name = 'SplitError';
  }
}

const MIN_CLASSES_PER_HALF = 2;

function checkCount(value: unknown, path: string, minimum: number): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum) {
    throw new SplitError(path, `expected an integer >= ${minimum}, got ${JSON.stringify(value)}`);
  }
}

function checkCaps(caps: SplitCaps | undefined): void {
  if (caps === undefined || caps === null || typeof caps !== 'object')
    throw new SplitError('split.caps', 'missing; valPerClass is required');
  checkCount(caps.valPerClass, 'split.caps.valPerClass', 0);
  if (caps.trainPerClass !== undefined) checkCount(caps.trainPerClass, 'split.caps.trainPerClass', 1);
  if (caps.testPerClass !== undefined) checkCount(caps.testPerClass, 'split.caps.testPerClass', 1);
}

function checkSeed(seed: unknown): void {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed))
    throw new SplitError('split.seed', `expected an integer, got ${JSON.stringify(seed)}`);
}

function makeHalf(members: { name: string; path: string }[], labelOf: Map<string, number>): HalfPlan {
  const sorted = members.slice().sort((a, b) => labelOf.get(a.name)! - labelOf.get(b.name)!);
  return {
    classes: sorted.map((member) => member.name),
    sourceLabels: sorted.map((member) => labelOf.get(member.name)!),
    specPaths: sorted.map((member) => member.path),
  };
}

/** Decides which classes form halves A and B; image counts are checked later by selectImages. */
export function planSplit(classes: string[], spec: SplitSpec): SplitPlan {
  const labelOf = new Map<string, number>();
  classes.forEach((name, label) => {
    if (typeof name !== 'string' || name === '')
      throw new SplitError(`dataset.classes[${label}]`, 'class names must be non-empty strings');
    if (labelOf.has(name))
      throw new SplitError(
        `dataset.classes[${label}]`,
        `class '${name}' repeats dataset.classes[${labelOf.get(name)}]`,
      );
    labelOf.set(name, label);
  });
  checkCaps(spec.caps);

  let halves: Record<HalfName, HalfPlan>;
  let seed: number;
  if (spec.kind === 'random') {
    checkSeed(spec.seed);
    seed = spec.seed;
    const order = shuffleInPlace(classes.slice(), deriveRng(seed, 'split-halves'));
    const cut = Math.floor(order.length / 2);
    // Paths name the class's place in the half as stored (sorted by label), which is what
    // a user sees in the manifest.
    const half = (names: string[], name: HalfName): HalfPlan => {
      const plan = makeHalf(
        names.map((member) => ({ name: member, path: '' })),
        labelOf,
      );
      plan.specPaths = plan.classes.map((_, i) => `split.halves.${name}[${i}]`);
      return plan;
    };
    halves = { A: half(order.slice(0, cut), 'A'), B: half(order.slice(cut), 'B') };
    for (const half of HALVES) {
      if (halves[half].classes.length < MIN_CLASSES_PER_HALF) {
        throw new SplitError(
          `split.halves.${half}`,
          `${halves[half].classes.length} class(es); each half needs at least ${MIN_CLASSES_PER_HALF}, so a random split needs at least ${2 * MIN_CLASSES_PER_HALF} classes (the dataset has ${classes.length})`,
        );
      }
    }
  } else if (spec.kind === 'groups') {
    if (spec.seed !== undefined) checkSeed(spec.seed);
    seed = spec.seed ?? 0;
    const groups = spec.groups as Partial<ClassGroups> | undefined;
    if (groups === undefined || groups === null || typeof groups !== 'object')
      throw new SplitError('split.groups', 'missing; expected {A: [...], B: [...]}');
    const seen = new Map<string, string>();
    const built: Partial<Record<HalfName, HalfPlan>> = {};
    for (const half of HALVES) {
      const list: unknown = groups[half];
      if (!Array.isArray(list))
        throw new SplitError(`split.groups.${half}`, `expected a list of class names, got ${JSON.stringify(list)}`);
      const members: { name: string; path: string }[] = [];
      list.forEach((name: unknown, i) => {
        const path = `split.groups.${half}[${i}]`;
        if (typeof name !== 'string') throw new SplitError(path, `expected a class name, got ${JSON.stringify(name)}`);
        if (!labelOf.has(name)) throw new SplitError(path, `unknown class '${name}'${suggestion(name, classes)}`);
        const earlier = seen.get(name);
        if (earlier !== undefined) {
          const where = earlier.startsWith(`split.groups.${half}[`) ? 'repeats' : 'is also in';
          throw new SplitError(path, `class '${name}' ${where} ${earlier}`);
        }
        seen.set(name, path);
        members.push({ name, path });
      });
      if (members.length < MIN_CLASSES_PER_HALF) {
        throw new SplitError(
          `split.groups.${half}`,
          `${members.length} class(es); each half needs at least ${MIN_CLASSES_PER_HALF}`,
        );
      }
      built[half] = makeHalf(members, labelOf);
    }
    halves = { A: built.A!, B: built.B! };
  } else {
    throw new SplitError(
      'split.kind',
      `expected 'random' or 'groups', got ${JSON.stringify((spec as { kind: unknown }).kind)}`,
    );
  }
  return { spec, datasetClasses: classes.slice(), seed, halves };
}

function suggestion(name: string, classes: string[]): string {
  const lower = name.toLowerCase();
  const close = classes.find((candidate) => candidate.toLowerCase() === lower);
  return close === undefined ? '' : ` (did you mean '${close}'?)`;
}

/**
 * Reads named groups from YAML: a mapping with exactly the keys A and B, each a list of class
 * names. Syntax errors are file errors (DataError with the offset); shape errors are spec
 * errors naming the field path and the file.
 */
export function parseGroupsYaml(text: string, file: string): ClassGroups {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (error) {
    // The parser's own message quotes the offending line: say where and what kind, never the text.
    if (error instanceof YAMLParseError) {
      const line = error.linePos?.[0].line;
      throw new DataError(file, `invalid YAML (${error.code}${line === undefined ? '' : ` at line ${line}`})`, {
        offset: error.pos[0],
      });
    }
    // Alias bombs and the like: the kind of problem only.
    throw new DataError(file, `unreadable YAML (${(error as Error).name})`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new SplitError('split.groups', `expected a mapping with keys A and B (in ${file})`);
  }
  const record = value as Record<string, unknown>;
  // The unknown keys are counted, not named: a groups file is not always what it claims to be.
  const unknown = Object.keys(record).filter((key) => key !== 'A' && key !== 'B').length;
  if (unknown > 0) {
    throw new SplitError('split.groups', `${unknown} unknown key(s); expected only A and B (in ${file})`);
  }
  const groups: ClassGroups = { A: [], B: [] };
  for (const half of HALVES) {
    const list = record[half];
    if (!Array.isArray(list))
      throw new SplitError(`split.groups.${half}`, `expected a list of class names (in ${file})`);
    groups[half] = list.map((name: unknown, i) => {
      // YAML turns bare 1 or true into non-strings; class names are always strings, so say so.
      if (typeof name !== 'string')
        throw new SplitError(
          `split.groups.${half}[${i}]`,
          `expected a class name (a string), got a ${name === null ? 'null' : typeof name} (in ${file}; quote it)`,
        );
      return name;
    });
  }
  return groups;
}

export interface SubsetSelection {
  /** Where `indices` point: the dataset's train or test subset. */
  source: 'train' | 'test';
  /** Image indices into the source subset, in storage order. */
  indices: Uint32Array;
  /** Half-local labels, parallel to indices. */
  labels: Int32Array;
  /** Images per half-local label. */
  perClass: number[];
}

export type HalfSelection = Record<SubsetName, SubsetSelection>;
export type SplitSelection = Record<HalfName, HalfSelection>;

/** Image indices of each class, each list in dataset order. */
function bucketByLabel(subset: Subset, classCount: number, where: { file: string; subset: string }): Uint32Array[] {
  const counts = new Uint32Array(classCount);
  for (let i = 0; i < subset.count; i++) {
    const label = subset.labels[i]!;
    if (!(label >= 0 && label < classCount)) {
      throw new DataError(where.file, `${where.subset} image ${i} has label ${label}, outside 0..${classCount - 1}`);
    }
    counts[label]!++;
  }
  const buckets = Array.from(counts, (count) => new Uint32Array(count));
  const fill = new Uint32Array(classCount);
  for (let i = 0; i < subset.count; i++) {
    const label = subset.labels[i]!;
    buckets[label]![fill[label]!++] = i;
  }
  return buckets;
}

function assemble(pieces: Uint32Array[], source: 'train' | 'test', rng: ReturnType<typeof deriveRng>): SubsetSelection {
  const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
  const indices = new Uint32Array(total);
  const labels = new Int32Array(total);
  let at = 0;
  pieces.forEach((piece, label) => {
    indices.set(piece, at);
    labels.fill(label, at, at + piece.length);
    at += piece.length;
  });
  // Stored class-interleaved so that any one shard is a fair sample of the classes: a
  // streaming reader that holds a shard or two in its shuffle buffer still mixes classes.
  const order = permutation(total, rng);
  const mixedIndices = new Uint32Array(total);
  const mixedLabels = new Int32Array(total);
  for (let i = 0; i < total; i++) {
    mixedIndices[i] = indices[order[i]!]!;
    mixedLabels[i] = labels[order[i]!]!;
  }
  return { source, indices: mixedIndices, labels: mixedLabels, perClass: pieces.map((piece) => piece.length) };
}

/**
 * Which images of the dataset go into each half's subsets. Per class, val (and test when the
 * dataset has none) is carved from a seeded shuffle of the class's train images, and the
 * train cap takes the next ones, so raising a cap only adds images.
 */
export function selectImages(dataset: Dataset, plan: SplitPlan): SplitSelection {
  const classCount = dataset.classes.length;
  if (classCount !== plan.datasetClasses.length || dataset.classes.some((name, i) => name !== plan.datasetClasses[i])) {
    throw new SplitError(
      'dataset.classes',
      `dataset '${dataset.name}' does not have the classes this split was planned for`,
    );
  }
  const { caps } = plan.spec;
  const trainBuckets = bucketByLabel(dataset.train, classCount, { file: dataset.source, subset: 'train' });
  const testBuckets =
    dataset.test === undefined
      ? undefined
      : bucketByLabel(dataset.test, classCount, { file: dataset.source, subset: 'test' });
  const carvedTest = testBuckets === undefined ? (caps.testPerClass ?? caps.valPerClass) : 0;

  const selection: Partial<SplitSelection> = {};
  for (const half of HALVES) {
    const { classes, sourceLabels, specPaths } = plan.halves[half];
    const train: Uint32Array[] = [];
    const val: Uint32Array[] = [];
    const test: Uint32Array[] = [];
    classes.forEach((name, local) => {
      const images = trainBuckets[sourceLabels[local]!]!.slice();
      if (images.length === 0)
        throw new SplitError(specPaths[local]!, `class '${name}' has no train images in dataset '${dataset.name}'`);
      const needed = caps.valPerClass + carvedTest;
      if (needed >= images.length) {
        const what =
          carvedTest > 0
            ? `valPerClass ${caps.valPerClass} + testPerClass ${carvedTest} (test is carved from train: the dataset has no test subset)`
            : `valPerClass ${caps.valPerClass}`;
        throw new SplitError(
          'split.caps.valPerClass',
          `${what} leaves no train images for class '${name}' (half ${half}), which has ${images.length}`,
        );
      }
      shuffleInPlace(images, deriveRng(plan.seed, 'carve', name));
      val.push(images.subarray(0, caps.valPerClass));
      if (testBuckets === undefined) test.push(images.subarray(caps.valPerClass, needed));
      const rest = images.subarray(needed);
      train.push(caps.trainPerClass === undefined ? rest : rest.subarray(0, caps.trainPerClass));
      if (testBuckets !== undefined) {
        const tests = testBuckets[sourceLabels[local]!]!.slice();
        if (tests.length === 0)
          throw new SplitError(specPaths[local]!, `class '${name}' has no test images in dataset '${dataset.name}'`);
        shuffleInPlace(tests, deriveRng(plan.seed, 'test', name));
        test.push(caps.testPerClass === undefined ? tests : tests.subarray(0, caps.testPerClass));
      }
    });
    const testSource = testBuckets === undefined ? 'train' : 'test';
    selection[half] = {
      train: assemble(train, 'train', deriveRng(plan.seed, 'store-order', half, 'train')),
      val: assemble(val, 'train', deriveRng(plan.seed, 'store-order', half, 'val')),
      test: assemble(test, testSource, deriveRng(plan.seed, 'store-order', half, 'test')),
    };
  }
  return selection as SplitSelection;
}

const SPLIT_ID_VERSION = 1;

/**
 * A content-addressed split id: a hash of the dataset's content (classes, shape, labels and
 * pixels; not its name or where it was read from) and of everything in the spec that can
 * change the split. Group order does not matter (halves are sorted by label), so it is
 * normalised away. Hashing the pixels costs about a second per few GB.
 */
export function computeSplitId(dataset: Dataset, spec: SplitSpec): string {
  const hash = createHash('sha256');
  const normalisedSpec = {
    kind: spec.kind,
    seed: spec.kind === 'random' ? spec.seed : (spec.seed ?? 0),
    groups: spec.kind === 'groups' ? { A: spec.groups.A.slice().sort(), B: spec.groups.B.slice().sort() } : null,
    caps: {
      trainPerClass: spec.caps.trainPerClass ?? null,
      valPerClass: spec.caps.valPerClass,
      testPerClass: spec.caps.testPerClass ?? null,
    },
  };
  hash.update(
    JSON.stringify({ version: SPLIT_ID_VERSION, classes: dataset.classes, shape: dataset.shape, spec: normalisedSpec }),
  );
  for (const subset of [dataset.train, dataset.test]) {
    if (subset === undefined) {
      hash.update('no-subset');
      continue;
    }
    hash.update(`subset:${subset.count}`);
    // Little-endian whatever the host, so the id is the same on every machine.
    const labels = Buffer.alloc(subset.count * 4);
    for (let i = 0; i < subset.count; i++) labels.writeInt32LE(subset.labels[i]!, i * 4);
    hash.update(labels);
    hash.update(subset.pixels);
  }
  const slug =
    dataset.name
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '') || 'dataset';
  return `${slug}-${hash.digest('hex').slice(0, 16)}`;
}
