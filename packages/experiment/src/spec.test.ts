import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSpec, SpecError, specJsonSchemaText, validateSpec, withGroups } from './spec.ts';
import type { SpecIssue } from './spec.ts';
import { DEMO_YAML } from './test-fixtures.ts';

function issuesOf(text: string): SpecIssue[] {
  try {
    parseSpec(text, 'sweep.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(SpecError);
    return (error as SpecError).issues;
  }
  throw new Error('expected a SpecError');
}

describe('parseSpec', () => {
  it('fills in every default', () => {
    const spec = parseSpec('name: tiny\ndataset: { kind: mnist }\n', 'tiny.yaml');
    expect(spec).toEqual({
      name: 'tiny',
      dataset: { kind: 'mnist' },
      split: { kind: 'random', valPerClass: 50 },
      net: { kind: 'small', width: 1, dropout: 0.5, init: 'he' },
      training: {
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
      },
      base: {},
      layers: [1, 2, 3, 4, 5, 6, 7],
      arms: ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'controlB'],
      repeats: 3,
      concurrency: 'auto',
    });
  });

  it('reads the demo spec and keeps relative paths as written', () => {
    const spec = parseSpec(DEMO_YAML, 'demo.yaml');
    expect(spec.base).toEqual({ maxEpochs: 30, patience: 3 });
    expect(spec.net.width).toBe(0.25);
    const folder = parseSpec(
      'name: f\ndataset: { kind: image-folder, path: ./data/imgs, imageSize: [32, 32], channels: 3 }\n',
      'f.yaml',
    );
    expect(folder.dataset).toEqual({ kind: 'image-folder', path: './data/imgs', imageSize: [32, 32], channels: 3 });
    const cifar = parseSpec('name: c\ndataset: { kind: cifar100, path: ../c100 }\n', 'c.yaml');
    expect(cifar.dataset).toEqual({ kind: 'cifar100', path: '../c100', labels: 'fine' });
  });

  it('reads JSON as well as YAML, to the same spec', () => {
    const json = JSON.stringify(
      { name: 'tiny', dataset: { kind: 'mnist' }, training: { learningRate: 0.05 } },
      null,
      '\t',
    );
    expect(parseSpec(json, 'tiny.json')).toEqual(
      parseSpec('name: tiny\ndataset: {kind: mnist}\ntraining: {learningRate: 0.05}\n', 'tiny.yaml'),
    );
  });

  it('lists every problem, each with its field path', () => {
    const issues = issuesOf(`name: Demo
dataset: { kind: mnist }
training:
  learningRate: 0
  batchSize: 1.5
  trianing: 3
arms: [baseA, baseB, BnB, AnC]
layers: [0, 3, 3]
concurrency: 0
`);
    const lines = issues.map((issue) => `${issue.path}: ${issue.message}`);
    expect(lines).toContain('training.learningRate: must be > 0');
    expect(lines).toContain('training.batchSize: must be an integer, got number 1.5');
    expect(lines).toContain('training.trianing: unknown field');
    expect(lines).toContain(
      "arms[3]: unknown arm 'AnC' (expected one of baseA, baseB, BnB, BnB+, AnB, AnB+, AnA, AnA+, BnA, BnA+, RnB, RnA, controlB, controlA)",
    );
    expect(lines).toContain('layers[0]: must be >= 1');
    expect(lines).toContain('concurrency: must be > 0');
    expect(lines.some((line) => line.startsWith('name: must match'))).toBe(true);
    for (const issue of issues) expect(issue.path).not.toBe('');
    // positions point into the text
    expect(issues.find((issue) => issue.path === 'training.learningRate')).toMatchObject({ line: 4, col: 17 });
  });

  it('puts the file, line and column in the error message', () => {
    expect(() =>
      parseSpec('name: x\ndataset: { kind: mnist }\ntraining: { learningRate: -1 }\n', 'sweeps/x.yaml'),
    ).toThrow('sweeps/x.yaml:3:27: training.learningRate: must be > 0');
  });

  it('checks fields that depend on each other', () => {
    const issues = issuesOf('name: g\ndataset: { kind: mnist }\nsplit: { kind: groups, groups: { B: [3, 4] } }\n');
    expect(issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      "split.groups.A: required when split.kind is 'groups' (or give split.groupsFile)",
    ]);

    const overlap = issuesOf(
      'name: g\ndataset: { kind: mnist }\nsplit: { kind: groups, groups: { A: [1, 2], B: [2, 3] } }\n',
    );
    expect(overlap.map((i) => i.path)).toEqual(['split.groups.B[0]']);

    const random = issuesOf('name: g\ndataset: { kind: mnist }\nsplit: { groups: { A: [1], B: [2] } }\n');
    expect(random[0]).toMatchObject({ path: 'split.groups', message: "only allowed when split.kind is 'groups'" });

    const idx = issuesOf('name: i\ndataset: { kind: idx, trainImages: a, trainLabels: b, testImages: c }\n');
    expect(idx[0]).toMatchObject({ path: 'dataset.testLabels', message: 'required when dataset.testImages is given' });

    const epochs = issuesOf('name: e\ndataset: { kind: mnist }\ntraining: { maxEpochs: 5, minEpochs: 6 }\n');
    expect(epochs[0]).toMatchObject({ path: 'training.minEpochs', message: 'must be <= maxEpochs (5)' });

    const dupArms = issuesOf('name: d\ndataset: { kind: mnist }\narms: [AnB, AnB]\n');
    expect(dupArms[0]).toMatchObject({ path: 'arms[1]', message: "'AnB' is listed twice" });
  });

  it('names the allowed dataset kinds', () => {
    const issues = issuesOf('name: d\ndataset: { kind: imagenet }\n');
    expect(issues[0]).toMatchObject({
      path: 'dataset.kind',
      message: "unknown kind 'imagenet' (expected one of mnist, idx, cifar10, cifar100, image-folder, catalog)",
    });
    expect(issuesOf('name: d\n')[0]).toMatchObject({ path: 'dataset', message: 'required' });
  });

  it('reports YAML syntax errors as file:line:col', () => {
    const issues = issuesOf('name: x\ndataset: { kind: mnist\n');
    expect(issues[0]?.line).toBeGreaterThan(0);
    expect(() => parseSpec('name: x\ndataset: { kind: mnist\n', 'bad.yaml')).toThrow(/bad\.yaml:\d+:\d+: /);
    expect(() => parseSpec('', 'empty.yaml')).toThrow('empty.yaml: expected a mapping of fields at the top, got null');
  });

  it('replaces a groups file by the groups it holds', () => {
    const spec = parseSpec(
      'name: g\ndataset: { kind: mnist }\nsplit: { kind: groups, groupsFile: groups.yaml }\n',
      'g.yaml',
    );
    const inlined = withGroups(spec, { A: [0, 1, 2, 3, 4], B: [5, 6, 7, 8, 9] });
    expect(inlined.split).toEqual({
      kind: 'groups',
      groups: { A: [0, 1, 2, 3, 4], B: [5, 6, 7, 8, 9] },
      valPerClass: 50,
    });
  });

  it('validates already-parsed values too', () => {
    expect(validateSpec({ name: 'v', dataset: { kind: 'mnist' } }).repeats).toBe(3);
    expect(() => validateSpec({ name: 'v', dataset: { kind: 'mnist' }, repeats: 0 })).toThrow('repeats: must be > 0');
    expect(() => validateSpec({ name: 'v', dataset: { kind: 'mnist' }, repeats: 1e6 })).toThrow(
      'repeats: must be <= 100',
    );
    expect(validateSpec({ name: 'v', dataset: { kind: 'catalog', name: 'cifar10-jpg' } }).dataset).toEqual({
      kind: 'catalog',
      name: 'cifar10-jpg',
    });
    expect(() => validateSpec({ name: 'v', dataset: { kind: 'catalog', name: 'imagenet' } })).toThrow(
      "dataset.name: unknown catalog dataset 'imagenet'",
    );
    expect(validateSpec({ name: 'v', dataset: { kind: 'mnist' }, net: { lrn: true, init: 'paper' } }).net).toEqual({
      kind: 'small',
      width: 1,
      dropout: 0.5,
      lrn: true,
      init: 'paper',
    });
  });
});

describe('docs/sweep-spec.schema.json', () => {
  it('is the schema the code generates (run packages/experiment/scripts/write-json-schema.ts)', () => {
    const committed = readFileSync(new URL('../../../docs/sweep-spec.schema.json', import.meta.url), 'utf8');
    expect(committed).toBe(specJsonSchemaText());
  });

  it('describes the fields people write', () => {
    const schema = JSON.parse(specJsonSchemaText()) as { required: string[]; properties: Record<string, unknown> };
    expect(schema.required).toEqual(['name', 'dataset']);
    expect(Object.keys(schema.properties)).toEqual([
      'name',
      'dataset',
      'split',
      'net',
      'training',
      'base',
      'layers',
      'arms',
      'repeats',
      'concurrency',
      'measures',
    ]);
  });
});
